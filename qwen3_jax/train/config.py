"""The training run config: typed dataclasses read from a YAML file, with dotted overrides.

    cfg = load_config("configs/train/tiny_stage1.yaml", overrides=["train.steps=50", "optimizer.lr=1e-3"])
    cfg.model_config()          # the Qwen3Config to train (preset + overrides)

A YAML file has one mapping per section (`model`, `mesh`, `train`, `optimizer`, `checkpoint`,
`log`, `data`). Any key that is not a field of its section is an error naming the key (a typo must
never silently fall back to a default). The `data` section is handed as a mapping to the data
pipeline (`qwen3_jax.train.data`), which checks its own keys.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Mapping

import yaml

from qwen3_jax.config import ConfigError, Qwen3Config


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """Which model to train and how to compute it.

    Attributes:
      preset: a preset name (`qwen3_jax.PRESETS`, case-insensitive), or None with `config`.
      config: Qwen3Config fields overriding the preset's (or the whole config without a preset);
        stage 3 raises `rope_theta` here (ABF).
      dtype: compute dtype ("float32" or "bfloat16"); params stay in `param_dtype`.
      param_dtype: master-weight dtype (float32).
      remat: rematerialisation policy of each layer (`model.transformer.REMAT_POLICIES`).
      moe_impl: expert computation (`ops.moe.IMPLS`).
      moe_capacity_factor: expert-parallel capacity of MoE layers (None = dropless). With an
        `expert` mesh axis, each device's receive buffer holds factor x (its tokens x top-k) rows
        instead of the dropless worst case (all tokens of every device routed to it); copies
        beyond it are dropped (`ops.expert_parallel`). 1.25-2 bounds the buffers at large scale.
      attention_impl: "xla", "flash", "ring" or "auto" (`model.attention_impl`).
      ring_layout: token order over the `sequence` axis with ring attention: "contiguous", or
        "zigzag" (causal work balanced; the step permutes each batch once, after computing the
        next-token targets, see `ops.ring_attention`).
    """

    preset: str | None = None
    config: dict = dataclasses.field(default_factory=dict)
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    moe_impl: str = "auto"
    moe_capacity_factor: float | None = None
    attention_impl: str = "xla"
    ring_layout: str = "contiguous"


@dataclasses.dataclass(frozen=True)
class TrainSection:
    """The step.

    Attributes:
      steps: optimizer steps of the run.
      batch_size: global batch in sequences (split over the data-parallel devices and processes).
      seq_len: tokens per sequence.
      grad_accum: micro-batches per step (batch_size must divide by it).
      seed: seed of the parameter init (and of the run's RNG key).
      loss_chunk: tokens per chunk of the cross-entropy (the [B, chunk, V] logits are the largest
        loss intermediate); 0 = the whole sequence at once.
      aux_loss_coef: weight of the MoE global-batch load-balancing loss; None = the model config's
        `router_aux_loss_coef`.
      router_z_loss_coef: weight of the router z-loss (mean squared logsumexp of router logits).
      moe_global_counts: with gradient accumulation, count expert selections over the whole step's
        batch (one extra forward pass per step) instead of per micro-batch.
    """

    steps: int = 100
    batch_size: int = 8
    seq_len: int = 128
    grad_accum: int = 1
    seed: int = 0
    loss_chunk: int = 1024
    aux_loss_coef: float | None = None
    router_z_loss_coef: float = 0.0
    moe_global_counts: bool = True


@dataclasses.dataclass(frozen=True)
class OptimizerSection:
    """AdamW with a learning-rate schedule and global-norm clipping.

    Attributes:
      lr: peak learning rate.
      schedule: "cosine" (warmup then cosine to min_lr_ratio·lr at `train.steps`), "wsd" (warmup,
        constant, then a decay over the last `decay_steps`), or "constant" (after warmup).
      warmup_steps: linear warmup from 0.
      decay_steps: length of the final decay of "wsd" (None = 10% of the steps).
      decay_shape: shape of the wsd decay: "linear", "cosine" or "sqrt" (1 - sqrt(progress)).
      min_lr_ratio: final learning rate as a fraction of `lr`.
      b1, b2, eps: Adam moments.
      weight_decay: decoupled decay; never applied to norm scales.
      clip_norm: global gradient-norm clipping threshold (None or 0 = off).
    """

    lr: float = 3e-4
    schedule: str = "cosine"
    warmup_steps: int = 0
    decay_steps: int | None = None
    decay_shape: str = "linear"
    min_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_norm: float | None = 1.0


@dataclasses.dataclass(frozen=True)
class CheckpointSection:
    """Orbax checkpoints under RUN_DIR/checkpoints.

    Attributes:
      every: save every this many steps (the last step is always saved).
      keep: keep the newest N checkpoints.
      async_save: write in the background while training continues.
    """

    every: int = 100
    keep: int = 3
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class LogSection:
    """Metrics.

    Attributes:
      every: log every this many steps.
      tensorboard: also write TensorBoard event files.
      peak_flops: matmul peak of one device in FLOP/s for MFU; None = measured at start.
      progress: show a tqdm progress bar.
    """

    every: int = 10
    tensorboard: bool = True
    peak_flops: float | None = None
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A whole run.

    Attributes:
      model, train, optimizer, checkpoint, log: the sections above.
      mesh: mesh spec ("data=2,fsdp=2,tensor=2"; one axis may be -1 for the rest of the devices).
      data: the data pipeline's section (checked by `qwen3_jax.train.data`).
    """

    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    train: TrainSection = dataclasses.field(default_factory=TrainSection)
    optimizer: OptimizerSection = dataclasses.field(default_factory=OptimizerSection)
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    log: LogSection = dataclasses.field(default_factory=LogSection)
    mesh: str = "data=-1"
    data: dict = dataclasses.field(default_factory=dict)

    def model_config(self) -> Qwen3Config:
        """The architecture: the preset with `model.config` applied on top."""
        from qwen3_jax.presets import get_preset

        fields = dict(self.model.config)
        if self.model.preset is not None:
            try:
                base = get_preset(self.model.preset)
            except KeyError as e:
                raise ConfigError(f"model.preset: {e.args[0]}") from None
            unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(Qwen3Config)})
            if unknown:
                raise ConfigError(f"model.config: unknown Qwen3Config keys {unknown}")
            return base.replace(**fields)
        if not fields:
            raise ConfigError("model: give a preset or a config")
        return Qwen3Config.from_dict(fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Checks values that are wrong whatever the devices and data (raises ConfigError)."""
        t, o = self.train, self.optimizer
        problems = []
        for name, v in (("train.steps", t.steps), ("train.batch_size", t.batch_size), ("train.seq_len", t.seq_len),
                        ("train.grad_accum", t.grad_accum), ("checkpoint.every", self.checkpoint.every),
                        ("checkpoint.keep", self.checkpoint.keep), ("log.every", self.log.every)):
            if v <= 0:
                problems.append(f"{name}={v} must be > 0")
        if t.batch_size > 0 and t.grad_accum > 0 and t.batch_size % t.grad_accum:
            problems.append(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}")
        if t.loss_chunk < 0:
            problems.append(f"train.loss_chunk={t.loss_chunk} must be >= 0")
        if o.schedule not in ("cosine", "wsd", "constant"):
            problems.append(f"optimizer.schedule={o.schedule!r} must be one of cosine, wsd, constant")
        if o.decay_shape not in ("linear", "cosine", "sqrt"):
            problems.append(f"optimizer.decay_shape={o.decay_shape!r} must be one of linear, cosine, sqrt")
        if o.lr <= 0 or o.warmup_steps < 0 or not 0 <= o.min_lr_ratio <= 1:
            problems.append(f"optimizer: lr={o.lr} must be > 0, warmup_steps={o.warmup_steps} >= 0, "
                            f"min_lr_ratio={o.min_lr_ratio} in [0, 1]")
        for name, v in (("model.dtype", self.model.dtype), ("model.param_dtype", self.model.param_dtype)):
            if v not in ("float32", "bfloat16"):
                problems.append(f"{name}={v!r} must be float32 or bfloat16")
        from qwen3_jax.model.transformer import REMAT_POLICIES

        if self.model.remat not in REMAT_POLICIES:
            problems.append(f"model.remat={self.model.remat!r} must be one of {', '.join(REMAT_POLICIES)}")
        from qwen3_jax.model.attention_impl import IMPLS as ATTENTION_IMPLS

        if self.model.attention_impl not in ATTENTION_IMPLS:
            problems.append(f"model.attention_impl={self.model.attention_impl!r} must be one of "
                            f"{', '.join(ATTENTION_IMPLS)}")
        if self.model.moe_capacity_factor is not None and not self.model.moe_capacity_factor > 0:
            problems.append(f"model.moe_capacity_factor={self.model.moe_capacity_factor} must be > 0 (or null: dropless)")
        if self.model.ring_layout not in ("contiguous", "zigzag"):
            problems.append(f"model.ring_layout={self.model.ring_layout!r} must be contiguous or zigzag")
        if problems:
            raise ConfigError("; ".join(problems))
        mc = self.model_config()
        if t.seq_len > mc.max_position_embeddings:
            raise ConfigError(f"train.seq_len={t.seq_len} exceeds the model's max_position_embeddings="
                              f"{mc.max_position_embeddings}")


_SECTIONS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _build(cls, d: Mapping[str, Any], where: str):
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kw = {}
    for k, v in d.items():
        kw[k] = _coerce(v, hints[k], f"{where}.{k}" if where else k)
    return cls(**kw)


def _coerce(v, hint, where: str):
    """Checks (and mildly converts: int -> float, "1e-3" -> float) a YAML value against a field's type."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, v, where)
    args = typing.get_args(hint)
    optional = type(None) in args
    if v is None:
        if optional or hint is Any:
            return None
        raise ConfigError(f"{where}: may not be null")
    base = next(a for a in args if a is not type(None)) if optional else hint
    if base is dict:
        if not isinstance(v, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {v!r}")
        return dict(v)
    if base is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{where}: expected true/false, got {v!r}")
        return v
    if base is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{where}: expected an integer, got {v!r}")
        return v
    if base is float:
        if isinstance(v, bool):
            raise ConfigError(f"{where}: expected a number, got {v!r}")
        try:
            return float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {v!r}") from None
    if base is str:
        if not isinstance(v, str):
            raise ConfigError(f"{where}: expected a string, got {v!r}")
        return v
    return v


def config_from_dict(d: Mapping[str, Any]) -> TrainConfig:
    """A TrainConfig from nested mappings; unknown keys anywhere are errors."""
    return _build(TrainConfig, d or {}, "")


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Applies "section.key=value" strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. train.steps=100)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p} is not a section")
        node[parts[-1]] = value
    return d


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    """Reads a YAML run config, applies `--set` overrides, and validates it."""
    try:
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"no config file {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(d).__name__}")
    cfg = config_from_dict(apply_overrides(d, overrides or []))
    cfg.validate()
    return cfg
