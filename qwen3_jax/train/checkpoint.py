"""Training checkpoints with Orbax's CheckpointManager: state, data position, and the run's config.

A run directory holds its checkpoints under `RUN_DIR/checkpoints/<step>/`, each with three items:

    state/   params (float32 master weights), opt_state, step, rng      (sharded arrays, OCDBT)
    data/    the data iterator's state, one JSON file per process       (grain's orbax handler)
    meta/    {"step", "config" (the TrainConfig), "model_config" (Qwen3Config)}   (JSON)

Saves are asynchronous: `save` returns once the arrays are copied and the write continues in the
background; Orbax writes into `<step>.orbax-checkpoint-tmp` and renames it when every item is
complete, so a save killed midway is never listed and `latest_step` is always a complete
checkpoint. `keep` bounds how many are kept.

`init_params_from(RUN_DIR)` reads only the params of another run's newest checkpoint (a new
stage starts from them with a fresh optimizer and fresh data), and `ParamSource` lets
`qwen3-jax export` stream a run's params to Hugging Face safetensors one tensor at a time.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from qwen3_jax.checkpoint.safetensors_io import CheckpointError
from qwen3_jax.config import Qwen3Config

CKPT_DIR = "checkpoints"


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


class _StateSnapshot:
    """A data-iterator state captured at `save()` time (the async write may run after the iterator
    has moved on); grain's orbax handler only calls `get_state`."""

    def __init__(self, state: bytes):
        self._state = state

    def get_state(self) -> bytes:
        return self._state


def checkpoint_dir(run_dir: str | os.PathLike) -> str:
    return os.path.join(os.fspath(run_dir), CKPT_DIR)


class Checkpointer:
    """Saves and restores a run's checkpoints.

    Args:
      run_dir: the run directory (checkpoints go to run_dir/checkpoints).
      keep: newest checkpoints to keep.
      async_save: write in the background.
    """

    def __init__(self, run_dir: str | os.PathLike, keep: int = 3, async_save: bool = True):
        import grain

        ocp = _ocp()
        self.directory = os.path.abspath(checkpoint_dir(run_dir))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                               cleanup_tmp_directories=True, create=True)
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler(),
                           "data": grain.checkpoint.CheckpointHandler()})

    def latest_step(self) -> int | None:
        """Step of the newest complete checkpoint, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, data_state: bytes | None, meta: dict[str, Any], force: bool = True) -> bool:
        """Starts saving `state` (and the data position and meta) as checkpoint `step`.

        Args:
          step: the number of optimizer steps taken (the state's `step`).
          state: the train state (sharded jax arrays).
          data_state: `DataIterator.get_state()` taken right after the last batch the state has seen.
          meta: JSON-serialisable run facts (config, model config).
          force: save even if the manager's interval policy would skip this step.
        """
        import grain

        ocp = _ocp()
        if step in self.manager.all_steps():
            return False
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave({**meta, "step": int(step)})}
        if data_state is not None:
            items["data"] = grain.checkpoint.CheckpointSave(_StateSnapshot(data_state))
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state, data_iterator=None) -> tuple[Any, dict]:
        """Restores checkpoint `step` onto the shardings of `abstract_state` (ShapeDtypeStructs).

        The data iterator, when given, is set in place to the saved position.

        Returns:
          (state, meta).
        """
        import grain

        ocp = _ocp()
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        return out["state"], out["meta"]

    def read_meta(self, step: int) -> dict:
        """The meta item of checkpoint `step` (no arrays read)."""
        with open(os.path.join(self.directory, str(step), "meta", "metadata"), encoding="utf-8") as f:
            return json.load(f)

    def wait(self) -> None:
        """Blocks until background saves are complete."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


# --- reading another run's params (--init-from, export) -------------------------------------------


def latest_complete_step(run_dir: str | os.PathLike) -> int | None:
    """Newest complete checkpoint step of a run directory (tmp directories of killed saves are ignored)."""
    d = checkpoint_dir(run_dir)
    if not os.path.isdir(d):
        return None
    steps = [int(n) for n in os.listdir(d)
             if n.isdigit() and os.path.isfile(os.path.join(d, n, "_CHECKPOINT_METADATA"))
             and os.path.isdir(os.path.join(d, n, "state"))]
    return max(steps) if steps else None


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a training run directory with at least one complete checkpoint."""
    return latest_complete_step(path) is not None


def _step_dir(run_dir, step=None) -> tuple[str, int]:
    step = latest_complete_step(run_dir) if step is None else step
    if step is None:
        raise CheckpointError(f"{run_dir}: no complete training checkpoint under {checkpoint_dir(run_dir)}/")
    # Orbax needs absolute paths.
    return os.path.abspath(os.path.join(checkpoint_dir(run_dir), str(step))), step


def run_model_config(run_dir: str | os.PathLike, step: int | None = None) -> Qwen3Config:
    """The model config stored with a run's checkpoint."""
    d, _ = _step_dir(run_dir, step)
    with open(os.path.join(d, "meta", "metadata"), encoding="utf-8") as f:
        return Qwen3Config.from_dict(json.load(f)["model_config"])


def _params_metadata(state_dir: str) -> dict[tuple[str, ...], Any]:
    ocp = _ocp()
    tree = ocp.PyTreeCheckpointHandler().metadata(_epath(state_dir))
    tree = getattr(tree, "tree", tree)
    flat = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, prefix + (str(k),))
        else:
            flat[prefix] = node

    walk(tree["params"], ())
    return flat


def _epath(p):
    from etils import epath

    return epath.Path(p)


def restore_params_subtree(run_dir: str | os.PathLike, abstract: dict, step: int | None = None) -> dict:
    """Restores only `abstract`'s subset of another run's params (a nested dict of ShapeDtypeStructs
    or NumPy arrays, keyed like the params); the optimizer state is never read."""
    ocp = _ocp()
    d, _ = _step_dir(run_dir, step)
    target = {"params": abstract}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    handler = ocp.PyTreeCheckpointHandler()
    out = handler.restore(_epath(os.path.join(d, "state")),
                          args=ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True))
    return out["params"]


def init_params_from(run_dir: str | os.PathLike, abstract_params, step: int | None = None):
    """Params of another run's newest checkpoint, placed like `abstract_params` (with shardings).

    Raises:
      CheckpointError: no checkpoint, or stored shapes that differ from the new run's model.
    """
    d, step = _step_dir(run_dir, step)
    stored = _params_metadata(os.path.join(d, "state"))
    want = {tuple(str(getattr(k, "key", k)) for k in kp): x
            for kp, x in jax.tree_util.tree_leaves_with_path(abstract_params)}
    problems = [f"missing {'/'.join(p)}" for p in want if p not in stored]
    problems += [f"{'/'.join(p)} is {list(stored[p].shape)}, the new model expects {list(x.shape)}"
                 for p, x in want.items() if p in stored and tuple(stored[p].shape) != tuple(x.shape)]
    if problems:
        raise CheckpointError(f"--init-from {run_dir} (step {step}): params do not fit this model: "
                              + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))
    return restore_params_subtree(run_dir, abstract_params, step)


def check_init_source(path: str | os.PathLike) -> None:
    """Raises CheckpointError unless `path` is a run directory, an Orbax model or a HF checkpoint."""
    from qwen3_jax.checkpoint import orbax_io

    path = os.fspath(path)
    if is_run_dir(path) or orbax_io.is_orbax_dir(path) or os.path.isfile(os.path.join(path, "config.json")):
        return
    raise CheckpointError(f"--init-from {path}: no complete training checkpoint there, and not an Orbax model "
                          "directory nor a Hugging Face checkpoint (config.json) either")


def init_params_from_any(path: str | os.PathLike, abstract_params):
    """`init_params_from` for a run directory; for a Hugging Face or Orbax model directory its
    params (read with `qwen3_jax.load`), shape-checked and placed like `abstract_params`."""
    if is_run_dir(path):
        return init_params_from(path, abstract_params)
    check_init_source(path)
    from qwen3_jax.api import load

    params = load(os.fspath(path), dtype="float32").params
    got = {tuple(str(getattr(k, "key", k)) for k in kp): x for kp, x in jax.tree_util.tree_leaves_with_path(params)}
    want = {tuple(str(getattr(k, "key", k)) for k in kp): x
            for kp, x in jax.tree_util.tree_leaves_with_path(abstract_params)}
    problems = [f"missing {'/'.join(p)}" for p in want if p not in got]
    problems += [f"{'/'.join(p)} is {list(got[p].shape)}, the new model expects {list(x.shape)}"
                 for p, x in want.items() if p in got and tuple(got[p].shape) != tuple(x.shape)]
    if problems:
        raise CheckpointError(f"--init-from {path}: params do not fit this model: " + "; ".join(problems[:5])
                              + (" ..." if len(problems) > 5 else ""))
    return jax.tree.map(lambda a, x: jax.device_put(x.astype(a.dtype), a.sharding), abstract_params, params)


class ParamSource:
    """A run's params, one stacked param at a time (for `checkpoint.export`).

    Attributes:
      config: the model config stored with the checkpoint.
      saved: param path -> (shape, dtype) as stored.
    """

    def __init__(self, run_dir: str | os.PathLike, step: int | None = None):
        self.run_dir = os.path.abspath(os.fspath(run_dir))
        d, self.step = _step_dir(run_dir, step)
        self.config = run_model_config(run_dir, self.step)
        self.saved = {p: (tuple(m.shape), np.dtype(m.dtype))
                      for p, m in _params_metadata(os.path.join(d, "state")).items()}

    def read(self, path: tuple[str, ...]) -> np.ndarray:
        shape, dtype = self.saved[path]
        node: dict = {}
        cur = node
        for p in path[:-1]:
            cur = cur.setdefault(p, {})
        cur[path[-1]] = np.empty(shape, dtype)
        out = restore_params_subtree(self.run_dir, node, self.step)
        for p in path:
            out = out[p]
        return np.asarray(out)
