"""The training run: config -> mesh -> data -> step -> checkpoints and metrics, resumable.

    train(load_config("configs/train/tiny_stage1.yaml"), "runs/s1")

Everything that can be wrong with the input (config keys and values, the mesh against the
devices, the data paths, the sequence length against the model, a run directory written by another
config, an `--init-from` run whose params do not fit) is checked before anything is written to the
run directory; those errors are `ConfigError`/`DataError`/`CheckpointError` (the CLI prints one line
and exits 2). A run directory that holds a checkpoint is resumed from its newest complete one, with
the data iterator at the saved position, so the losses that follow are those of an uninterrupted
run. A NaN/Inf loss raises `NonFiniteLoss` before the step's state can be saved.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np
import yaml

from qwen3_jax.checkpoint.safetensors_io import CheckpointError
from qwen3_jax.config import ConfigError
from qwen3_jax.train.config import TrainConfig, config_from_dict

RUN_CONFIG = "config.yaml"
# Sections that may change between invocations on the same run directory without changing the run.
_MUTABLE = ("log", "checkpoint")


@dataclasses.dataclass
class RunResult:
    """What `train` returns.

    Attributes:
      step: the state's step at the end.
      resumed_from: checkpoint step the run resumed from, or None.
      metrics: the records written in this invocation.
      state: the final train state (for notebooks and tests).
      train_step: the `TrainStep` (module, mesh, shardings).
    """

    step: int
    resumed_from: int | None
    metrics: list
    state: Any = None
    train_step: Any = None


def _comparable(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in _MUTABLE}


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]} ({a!r} in the run directory, {b!r} now)"]


def check_run_dir(run_dir: str, cfg: TrainConfig) -> dict | None:
    """The config stored in `run_dir` (None for a new run); ConfigError if it differs from `cfg`."""
    path = os.path.join(run_dir, RUN_CONFIG)
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f"run directory {run_dir} exists and is not a directory")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        stored = yaml.safe_load(f)
    # Normalise both through the dataclasses (defaults filled in, types coerced).
    stored_d = config_from_dict(stored).to_dict()
    diffs = _diff(_comparable(stored_d), _comparable(cfg.to_dict()))
    if diffs:
        raise ConfigError(f"run directory {run_dir} was written by a different config: {'; '.join(diffs[:4])}"
                          f"{' ...' if len(diffs) > 4 else ''} (use a new --run-dir)")
    return stored


def _write_run_config(run_dir: str, cfg: TrainConfig) -> None:
    if jax.process_index() != 0:
        return
    tmp = os.path.join(run_dir, RUN_CONFIG + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    os.replace(tmp, os.path.join(run_dir, RUN_CONFIG))


def make_run_mesh(cfg: TrainConfig, devices=None):
    """The config's mesh on `devices` (default all); ConfigError when it does not fit them or the batch."""
    from qwen3_jax.sharding import rules
    from qwen3_jax.sharding.mesh import make_mesh

    try:
        mesh = make_mesh(cfg.mesh, devices=devices)
    except ValueError as e:
        raise ConfigError(f"mesh: {e}") from None
    sizes = rules.mesh_axis_sizes(mesh)
    dp = rules.batch_multiple(mesh)
    micro = cfg.train.batch_size // cfg.train.grad_accum
    if micro % dp:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} / grad_accum={cfg.train.grad_accum} = {micro} "
                          f"rows per micro-batch do not split over the {dp} data-parallel devices of mesh {cfg.mesh!r}")
    if cfg.train.seq_len % sizes.get("sequence", 1):
        raise ConfigError(f"train.seq_len={cfg.train.seq_len} does not split over sequence={sizes['sequence']}")
    return mesh


def build_run_data(cfg: TrainConfig, tokenizer=None):
    """This process's data iterator for the run (DataError on bad data config or paths)."""
    from qwen3_jax.train.data import DataConfig, build_data

    if not cfg.data:
        raise ConfigError("data: the config has no data section")
    if tokenizer is None:
        from qwen3_jax.text.tokenizer import Tokenizer

        tokenizer = Tokenizer.qwen3()
    dc = DataConfig.from_dict(cfg.data, seq_len=cfg.train.seq_len, batch_size=cfg.train.batch_size,
                              seed=cfg.train.seed)
    return build_data(dc, tokenizer, process_index=jax.process_index(), process_count=jax.process_count())


def train(cfg: TrainConfig, run_dir: str | os.PathLike, init_from: str | None = None, stop_at: int | None = None,
          data=None, quiet: bool = False, devices=None, batch_keys: tuple | None = None,
          tokenizer=None, extra_metrics: dict[str, float] | None = None) -> RunResult:
    """Runs (or resumes) training until `cfg.train.steps` (or `stop_at`) steps are done.

    Args:
      cfg: the validated run config.
      run_dir: the run directory (created after all checks pass).
      init_from: another run directory whose newest params start this run (fresh optimizer and data),
        or a Hugging Face / Orbax model directory; ignored when `run_dir` already has a checkpoint
        (the run resumes instead).
      stop_at: stop after this step (a checkpoint is written there) without changing the schedule.
      data: optional iterator of local batches instead of the config's data pipeline (tests);
        it must have get_state/set_state to be resumable.
      quiet: no progress bar.
      devices: the devices of the mesh (default: all devices).
      batch_keys: the batch arrays the step reads (default `step.BATCH_KEYS`; SFT adds `LOSS_MASK`).
      tokenizer: the tokenizer of the data, recorded in the run directory (`run_tokenizer`); None
        with the config's pipeline: the Qwen3 tokenizer it encodes with; None with `data`: none is
        recorded.
      extra_metrics: constant values added to every metrics record (SFT: the counts of its
        prepared data, so metrics.jsonl says how many conversations were dropped).
    """
    from qwen3_jax.train import checkpoint as ck, run_tokenizer
    from qwen3_jax.train.metrics import (MetricsWriter, check_finite, flops_per_token, measure_matmul_peak,
                                         scalar_metrics, total_peak)
    from qwen3_jax.train.step import build_train_step

    run_dir = os.path.abspath(os.fspath(run_dir))
    cfg.validate()
    check_run_dir(run_dir, cfg)
    mesh = make_run_mesh(cfg, devices)
    mc = cfg.model_config()
    resume_step = ck.latest_complete_step(run_dir)
    if init_from is not None and resume_step is None:
        ck.check_init_source(init_from)
    if data is None:
        if tokenizer is None and cfg.data:
            from qwen3_jax.text.tokenizer import Tokenizer

            tokenizer = Tokenizer.qwen3()
        it = build_run_data(cfg, tokenizer)
    else:
        it = data
    ts = build_train_step(cfg, mesh, mc) if batch_keys is None else build_train_step(cfg, mesh, mc, batch_keys)
    abstract = ts.abstract_state()
    init_params = None
    if init_from is not None and resume_step is None:
        init_params = ck.init_params_from_any(init_from, abstract["params"])  # shape check before writing

    # ---- from here on the run directory is written ----
    os.makedirs(run_dir, exist_ok=True)
    _write_run_config(run_dir, cfg)
    run_tokenizer.record(run_dir, tokenizer)
    ckpt = ck.Checkpointer(run_dir, keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
    if resume_step is not None:
        state, _ = ckpt.restore(resume_step, abstract, it if hasattr(it, "set_state") else None)
    elif init_params is not None:
        state = ts.state_from_params(init_params)
    else:
        state = ts.init_state()
    step = int(jax.device_get(state["step"]))
    writer = MetricsWriter(run_dir, tensorboard=cfg.log.tensorboard, resume_step=step)
    meta = {"config": cfg.to_dict(), "model_config": mc.to_dict()}
    end = cfg.train.steps if stop_at is None else min(stop_at, cfg.train.steps)
    peak = cfg.log.peak_flops or measure_matmul_peak(ts.module.dtype)
    flops_tok = flops_per_token(mc, cfg.train.seq_len)
    records = []
    bar = None
    if cfg.log.progress and not quiet and jax.process_index() == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=end, initial=step, desc="train", unit="step", dynamic_ncols=True)
    t_last, tokens_since = time.perf_counter(), 0.0
    try:
        while step < end:
            local = next(it)
            data_state = it.get_state() if hasattr(it, "get_state") else None
            state, m = ts(state, ts.place_batch(local))
            step += 1
            m = jax.device_get(m)
            check_finite(step, m)  # before any save of this state
            tokens_since += float(m["real_tokens"])
            if step % cfg.log.every == 0 or step == end:
                now = time.perf_counter()
                rec = scalar_metrics(step, m)
                tps = tokens_since / max(now - t_last, 1e-9)
                rec["tokens_per_second"] = tps
                rec["mfu"] = tps * flops_tok / total_peak(peak)
                rec.update(extra_metrics or {})
                writer.write(rec)
                records.append(rec)
                t_last, tokens_since = now, 0.0
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{tps:,.0f}", refresh=False)
            if bar is not None:
                bar.update(1)
            if step % cfg.checkpoint.every == 0 or step == end:
                ckpt.save(step, state, data_state, meta)
    finally:
        if bar is not None:
            bar.close()
        writer.close()
        ckpt.close()  # waits for the last async save (a failed run keeps its earlier checkpoints)
    return RunResult(step=step, resumed_from=resume_step, metrics=records, state=state, train_step=ts)
