"""Our Orbax checkpoint directory: write it one parameter at a time, restore it (sharded or not).

Layout of a converted directory:

    ckpt/
      params/                 Orbax PyTree checkpoint of the stacked params (OCDBT + zarr3)
      qwen3_config.json       `Qwen3Config.to_dict()`
      tokenizer.json, ...     copied from the source, with generation_config.json

`params/` is written with Orbax's partial save (`orbax.checkpoint.v1.partial`): each call adds
one stacked parameter to a pending checkpoint and `finalize` commits it, so the writer holds one
parameter at a time (peak: that array plus TensorStore's chunk buffers for it, about twice its
size; see experiments/bench_convert_memory.py). The result is an ordinary PyTree checkpoint: `ocp.v1.load(ckpt/params,
abstract)` and the v0 `ocp.StandardCheckpointer().restore(ckpt/params/state, abstract)` both
read it. Arrays are stored uncompressed (weights barely compress) in chunks of at most
`CHUNK_BYTES`, so a device restoring onto a mesh reads its own slices, not whole tensors.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, SingleDeviceSharding

from qwen3_jax.checkpoint.hf_mapping import param_shapes
from qwen3_jax.checkpoint.safetensors_io import CheckpointError
from qwen3_jax.config import Qwen3Config
from qwen3_jax.sharding.placement import param_shardings

PARAMS_DIR = "params"
CONFIG_FILE = "qwen3_config.json"
CHUNK_BYTES = 64 * 2**20

Path = tuple[str, ...]


def _ocp():
    # Imported lazily: orbax pulls in a lot, and `is_orbax_dir` must stay cheap for `load()`.
    from orbax.checkpoint import v1 as ocp

    return ocp


def _save_context():
    ctx = _ocp().Context()
    ctx.array.saving.use_compression = False
    ctx.array.saving.storage_options.chunk_byte_size = CHUNK_BYTES
    # Orbax copies host arrays before an async write so callers may mutate them; every save here
    # is waited for before the array is touched again, so that copy would only double the peak.
    ctx.memory.deepcopy_host_arrays = False
    return ctx


def _load_context(partial: bool):
    ctx = _ocp().Context()
    ctx.pytree.loading.partial_load = partial
    return ctx


def release_freed_memory() -> None:
    """Returns freed heap pages to the OS (glibc only; elsewhere a no-op).

    TensorStore encodes chunks in buffers taken from glibc's heap arenas; after a save they are
    free but stay resident, so without a trim each param's write leaves up to one more param's
    worth of RSS behind (measured: +128 MiB per 128 MiB param, gone after `malloc_trim`).
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim  # noqa: B018  (raises AttributeError on a libc without it)
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


def _nest(flat: dict[Path, Any]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = v
    return tree


def _flatten(tree, prefix: Path = ()) -> dict[Path, Any]:
    if isinstance(tree, dict) or (hasattr(tree, "items") and not hasattr(tree, "shape")):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, prefix + (str(k),)))
        return out
    return {prefix: tree}


def params_dir(path: str | os.PathLike) -> str:
    """The absolute path of `path/params`.

    Orbax needs absolute paths: given a relative one, its metadata reader returns None for every
    array (and restoring then fails far from the cause).
    """
    return os.path.join(os.path.abspath(os.fspath(path)), PARAMS_DIR)


def is_orbax_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory written by `qwen3-jax convert` (params/ + qwen3_config.json)."""
    path = os.fspath(path)
    return os.path.isdir(os.path.join(path, PARAMS_DIR)) and os.path.isfile(os.path.join(path, CONFIG_FILE))


class ParamWriter:
    """Adds stacked params one by one to `directory/params`, then commits them with `finalize`.

    Args:
      directory: the (temporary) output directory; `params/` must not exist yet.
    """

    def __init__(self, directory: str | os.PathLike):
        self.target = params_dir(directory)
        self.written: list[Path] = []

    def save(self, path: Path, array) -> None:
        """Writes one param (NumPy or jax.Array; a sharded array keeps its layout) and waits for it."""
        with _save_context():
            _ocp().partial.save(self.target, _nest({path: array}))
        self.written.append(path)
        release_freed_memory()

    def finalize(self) -> None:
        """Commits the pending partial checkpoint to `params/`."""
        with _save_context():
            _ocp().partial.finalize(self.target)


def write_config(directory: str | os.PathLike, cfg: Qwen3Config) -> None:
    """Writes `cfg` as `qwen3_config.json` (our field names, so nothing is lost in translation)."""
    with open(os.path.join(os.fspath(directory), CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(cfg.to_dict(), f, indent=2)


def read_config(path: str | os.PathLike) -> Qwen3Config:
    """The `Qwen3Config` stored in a converted directory."""
    p = os.path.join(os.fspath(path), CONFIG_FILE)
    try:
        with open(p, encoding="utf-8") as f:
            return Qwen3Config.from_dict(json.load(f))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no {CONFIG_FILE} (not a qwen3-jax Orbax checkpoint)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p} is not valid JSON: {e}") from None


def saved_params(path: str | os.PathLike) -> dict[Path, tuple[tuple[int, ...], np.dtype]]:
    """Param path -> (shape, dtype) as stored, read from the Orbax metadata (no array data)."""
    p = params_dir(path)
    try:
        meta = _ocp().metadata(p).metadata
    except Exception as e:  # orbax raises assorted types for a damaged or foreign directory
        raise CheckpointError(f"{p}: cannot read the Orbax checkpoint metadata ({type(e).__name__}: {e})") from None
    return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in _flatten(meta).items()}


def check_params(path: str | os.PathLike, cfg: Qwen3Config) -> dict[Path, tuple[tuple[int, ...], np.dtype]]:
    """Compares the stored params with `cfg`; raises one CheckpointError listing every problem."""
    return check_saved(path, saved_params(path), cfg)


def check_saved(path, saved: dict[Path, tuple[tuple[int, ...], np.dtype]], cfg: Qwen3Config):
    """`check_params` on a given path -> (shape, dtype) table (e.g. a training checkpoint's)."""
    want = param_shapes(cfg)
    problems = [f"  missing: {'/'.join(p)}" for p in want if p not in saved]
    problems += [f"  unexpected: {'/'.join(p)}" for p in saved if p not in want]
    problems += [f"  wrong shape: {'/'.join(p)} is {list(saved[p][0])}, config expects {list(s)}"
                 for p, s in want.items() if p in saved and saved[p][0] != tuple(s)]
    if problems:
        raise CheckpointError(f"{path}: stored params do not match {CONFIG_FILE} ({len(problems)} problems):\n"
                              + "\n".join(problems))
    return saved


def _target_shardings(cfg: Qwen3Config, mesh: Mesh | None) -> dict[Path, Any]:
    if mesh is None:
        one = SingleDeviceSharding(jax.devices()[0])
        return {p: one for p in param_shapes(cfg)}
    flat = jax.tree_util.tree_leaves_with_path(param_shardings(cfg, mesh))
    return {tuple(str(getattr(k, "key", k)) for k in kp): s for kp, s in flat}


def restore(path: str | os.PathLike, mesh: Mesh | None = None, dtype: Any = None) -> tuple[Qwen3Config, dict]:
    """Restores a converted directory.

    Args:
      path: directory written by `qwen3-jax convert`.
      mesh: optional mesh; each param is restored straight into its `param_shardings` layout, so
        every device reads only its own slices. Without a mesh, params land on the first device.
      dtype: param dtype; None keeps the stored dtypes (Orbax casts while reading otherwise).

    Returns:
      (config, params) with params a nested dict of jax.Arrays.
    """
    path = os.fspath(path)
    cfg = read_config(path)
    saved = check_params(path, cfg)
    shardings = _target_shardings(cfg, mesh)
    abstract = {p: jax.ShapeDtypeStruct(shape, np.dtype(dtype) if dtype is not None else dt, sharding=shardings[p])
                for p, (shape, dt) in saved.items()}
    with _load_context(partial=False):
        params = _ocp().load(params_dir(path), _nest(abstract))
    return cfg, params


def restore_param(path: str | os.PathLike, param: Path, shape, dtype) -> np.ndarray:
    """Reads one stored param into host memory (for export, which streams param by param)."""
    # A NumPy leaf as the target makes Orbax return NumPy, skipping a device copy; np.empty only
    # reserves address space, so it costs no resident memory.
    abstract = _nest({param: np.empty(tuple(shape), np.dtype(dtype))})
    with _load_context(partial=True):
        tree = _ocp().load(params_dir(path), abstract)
    release_freed_memory()
    return np.asarray(_flatten(tree)[param])
