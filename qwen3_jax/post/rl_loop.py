"""The loop of rollout-based training (GRPO, distillation) on the pretraining trainer's parts.

    run = RLRun(cfg, post_section, run_dir, init_from, devices)   # checks, mesh, state, checkpoints
    run.loop(make_batch, loss_fn, steps)                          # rollout -> update(s) -> log -> save

What is the trainer's and reused as is: the run config and its checks (`train.loop.check_run_dir`,
`make_run_mesh`), the state layout and optimizer (`train.step.build_train_step`: params,
opt_state, step, rng with their shardings), checkpoints (`train.checkpoint.Checkpointer`, newest
complete one resumed), `--init-from` (a run, Orbax or HF directory), metrics (`MetricsWriter`,
JSONL + TensorBoard) and the NaN stop. What differs from pretraining is where a batch comes from
(the policy samples it) and the loss, so this module has its own small loop around them.

The state also holds ``frozen``: params that never train but must survive a resume exactly (the
GRPO reference model). Batches depend only on the step (prompt order and sampling seed are
functions of ``train.seed`` and the step), so no data position is saved and a resumed run
continues with the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from jax.sharding import NamedSharding, PartitionSpec as P

from qwen3_jax.config import ConfigError
from qwen3_jax.sharding.placement import mesh_context
from qwen3_jax.train.config import TrainConfig, apply_overrides, config_from_dict

POST_CONFIG = "post.yaml"


def load_post_config(path: str | os.PathLike, section: str, overrides: list[str] | None = None
                     ) -> tuple[TrainConfig, dict]:
    """Reads a post-training YAML: the trainer's sections plus one ``section`` (e.g. "grpo").

    Returns:
        (the validated TrainConfig, the section's mapping).
    """
    try:
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"no config file {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(d).__name__}")
    d = apply_overrides(d, overrides or [])
    post = d.pop(section, None) or {}
    if not isinstance(post, dict):
        raise ConfigError(f"{section}: expected a mapping, got {type(post).__name__}")
    cfg = config_from_dict(d)
    cfg.validate()
    return cfg, post


def section_from_dict(cls, d: dict, where: str):
    """A frozen dataclass from a mapping; ConfigError names an unknown key."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} (expected some of {sorted(names)})")
    try:
        return cls(**d)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


class RLRun:
    """A rollout-training run directory: checks, mesh, state (new, initialised or resumed), writers.

    Attributes:
        cfg: the trainer config; post: the post-training section (a dataclass, stored with the run).
        mesh, ts: the mesh and the trainer's `TrainStep` (state layout, optimizer, module).
        state: params, opt_state, step, rng, frozen.
        resumed_from: the checkpoint step resumed, or None.
    """

    def __init__(self, cfg: TrainConfig, post, run_dir: str | os.PathLike, init_from: str | None = None,
                 devices=None, frozen_from: Callable | None = None, tokenizer=None):
        """Everything is checked before the run directory is written.

        Args:
            frozen_from: ``fn(params) -> pytree`` building the frozen part of a new run's state from
                its initial params (default: nothing frozen).
            tokenizer: the rollouts' tokenizer, recorded in the run directory (`train.run_tokenizer`).
        """
        from qwen3_jax.train import checkpoint as ck, run_tokenizer
        from qwen3_jax.train.loop import check_run_dir, make_run_mesh
        from qwen3_jax.train.step import build_train_step

        self.run_dir = os.path.abspath(os.fspath(run_dir))
        cfg.validate()
        check_run_dir(self.run_dir, cfg)
        self._check_post(post)
        self.cfg, self.post = cfg, post
        self.mesh = make_run_mesh(cfg, devices)
        self.mc = cfg.model_config()
        self.resumed_from = ck.latest_complete_step(self.run_dir)
        self.ts = build_train_step(cfg, self.mesh, self.mc)
        abstract = self.ts.abstract_state()
        frozen_from = frozen_from or (lambda params: {})
        init_params = None
        if init_from is not None and self.resumed_from is None:
            init_params = ck.init_params_from_any(init_from, abstract["params"])
        with mesh_context(self.mc, self.mesh):
            abstract_frozen = jax.eval_shape(frozen_from, abstract["params"])
        shardings = _frozen_shardings(abstract_frozen, abstract["params"], self.mesh)
        abstract_frozen = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                                       abstract_frozen, shardings)
        self.abstract = {**abstract, "frozen": abstract_frozen}
        # Every update returns the state in these shardings, so programs that take the params (the
        # rollout engine's) see the same input shardings at every step and never recompile.
        self.state_shardings = jax.tree.map(lambda a: a.sharding, self.abstract)

        # ---- from here on the run directory is written ----
        from qwen3_jax.train.loop import _write_run_config

        os.makedirs(self.run_dir, exist_ok=True)
        _write_run_config(self.run_dir, cfg)
        self._write_post(post)
        run_tokenizer.record(self.run_dir, tokenizer)
        self.ckpt = ck.Checkpointer(self.run_dir, keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
        if self.resumed_from is not None:
            self.state, _ = self.ckpt.restore(self.resumed_from, self.abstract)
        else:
            state = self.ts.state_from_params(init_params) if init_params is not None else self.ts.init_state()
            with mesh_context(self.mc, self.mesh):
                # A copy: the update donates the state, and a frozen leaf must not share a buffer with params.
                frozen = jax.tree.map(lambda x, a: jax.device_put(jnp.array(x, copy=True), a.sharding),
                                      frozen_from(state["params"]), abstract_frozen)
            self.state = {**state, "frozen": frozen}

    # ------------------------------------------------------------------ run-directory bookkeeping
    def _post_path(self) -> str:
        return os.path.join(self.run_dir, POST_CONFIG)

    def _check_post(self, post) -> None:
        path = os.path.join(os.fspath(self.run_dir), POST_CONFIG)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                stored = yaml.safe_load(f)
            now = _plain(dataclasses.asdict(post))
            if stored != now:
                diffs = [k for k in sorted(set(stored) | set(now)) if stored.get(k) != now.get(k)]
                raise ConfigError(f"run directory {self.run_dir} was written by a different post-training config "
                                  f"({', '.join(diffs[:4])} differ; use a new --run-dir)")

    def _write_post(self, post) -> None:
        if jax.process_index() != 0:
            return
        tmp = self._post_path() + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            yaml.safe_dump(_plain(dataclasses.asdict(post)), f, sort_keys=True)
        os.replace(tmp, self._post_path())

    def batch_sharding(self, ndim: int) -> NamedSharding:
        """Rows over the trainer's data axes, the rest replicated."""
        spec = self.ts.batch_shardings["tokens"].spec
        return NamedSharding(self.mesh, P(spec[0], *([None] * (ndim - 1))))

    def place(self, arrays: dict) -> dict:
        """Host arrays -> device arrays sharded by rows (single process)."""
        return {k: jax.device_put(np.asarray(v), self.batch_sharding(np.ndim(v))) for k, v in arrays.items()}

    # ------------------------------------------------------------------ the update
    def make_update(self, loss_fn: Callable, donate: bool = True):
        """A jitted ``update(state, batch, extras) -> (state, metrics)`` around ``loss_fn(params, batch,
        extras) -> (loss, stats)`` with the trainer's optimizer (frozen params untouched)."""
        tx: optax.GradientTransformation = self.ts.optimizer
        from qwen3_jax.train.optimizer import current_lr

        def update(state, batch, extras):
            (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, extras)
            updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
            params = optax.apply_updates(state["params"], updates)
            metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": current_lr(opt_state),
                       **stats}
            return {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

        jitted = jax.jit(update, out_shardings=(self.state_shardings, NamedSharding(self.mesh, P())),
                         donate_argnums=(0,) if donate else ())

        def call(state, batch, extras):
            with mesh_context(self.mc, self.mesh):
                return jitted(state, batch, extras)

        call.jitted = jitted
        return call

    def loop(self, produce: Callable[[int, dict], tuple[dict, Any, dict]], update: Callable, iterations: int = 1,
             stop_at: int | None = None, quiet: bool = False, desc: str = "rl") -> list[dict]:
        """Runs steps until ``train.steps`` (or ``stop_at``): produce a batch, update ``iterations``
        times on it, log, checkpoint.

        Args:
            produce: ``fn(step, state) -> (batch, extras, host_stats)`` for the step about to run
                (0-based: the number of optimizer steps already taken on earlier batches).
            update: from `make_update`.
            iterations: updates per batch (GRPO's ``num_iterations``); each counts as a step.

        Returns:
            The metric records written.
        """
        from qwen3_jax.train.metrics import MetricsWriter, check_finite, scalar_metrics

        cfg = self.cfg
        step = int(jax.device_get(self.state["step"]))
        writer = MetricsWriter(self.run_dir, tensorboard=cfg.log.tensorboard, resume_step=step)
        end = cfg.train.steps if stop_at is None else min(stop_at, cfg.train.steps)
        meta = {"config": cfg.to_dict(), "model_config": self.mc.to_dict(),
                "post": _plain(dataclasses.asdict(self.post))}
        bar = None
        if cfg.log.progress and not quiet and jax.process_index() == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=end, initial=step, desc=desc, unit="step", dynamic_ncols=True)
        records = []
        try:
            while step < end:
                t0 = time.perf_counter()
                batch, extras, host = produce(step, self.state)
                t1 = time.perf_counter()
                for _ in range(iterations):
                    if step >= end:
                        break
                    self.state, m = update(self.state, batch, extras)
                    m = jax.device_get(m)
                    step += 1
                    check_finite(step, m)
                    rec = {**scalar_metrics(step, m), **host}
                    t2 = time.perf_counter()
                    # Of this step's wall time: the rollout (only the first step of a batch samples).
                    rec["update_seconds"] = t2 - t1
                    rec["rollout_share"] = (t1 - t0) / max(t2 - t0, 1e-9)
                    t0 = t1 = t2
                    if step % cfg.log.every == 0 or step == end:
                        writer.write(rec)
                    records.append(rec)
                    if bar is not None:
                        bar.set_postfix(loss=f"{rec['loss']:.4f}", reward=f"{rec.get('reward_mean', 0.0):.3f}",
                                        refresh=False)
                        bar.update(1)
                    if step % cfg.checkpoint.every == 0 or step == end:
                        self.ckpt.save(step, self.state, None, meta)
        finally:
            if bar is not None:
                bar.close()
            writer.close()
            self.ckpt.close()
        return records


def _frozen_shardings(abstract_frozen, abstract_params, mesh):
    """Frozen trees that mirror the params take their shardings; anything else is replicated."""
    if jax.tree.structure(abstract_frozen) == jax.tree.structure(abstract_params):
        return jax.tree.map(lambda a: a.sharding, abstract_params)
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), abstract_frozen)


def _plain(x):
    """Tuples as lists (how YAML reads them back)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def step_seed(seed: int, step: int) -> int:
    """A 31-bit seed for step ``step`` of a run seeded ``seed`` (rollout sampling)."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0] & 0x7FFFFFFF)


def prompt_order(n: int, batch: int, step: int, seed: int) -> list[int]:
    """The prompt indices of a step: epochs of seeded permutations, read ``batch`` at a time."""
    out = []
    pos = step * batch
    while len(out) < batch:
        epoch, offset = divmod(pos, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        take = min(batch - len(out), n - offset)
        out += perm[offset: offset + take].tolist()
        pos += take
    return out
