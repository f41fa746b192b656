"""AdamW with global-norm clipping, learning-rate schedules, and no weight decay on norm scales.

    tx = make_optimizer(cfg.optimizer, total_steps=cfg.train.steps)
    current_lr(opt_state)        # the learning rate the last update used (for logging)

The AdamW transform is wrapped in `optax.inject_hyperparams` so the schedule's value is stored in
the optimizer state (and so checkpointed and logged). The weight-decay mask must be one of its
*static* arguments: passed as an ordinary hyperparameter, a callable mask is treated as a value and
silently not applied (optax 0.2.8 then decays every parameter, norm scales included);
`tests/train/test_train_optimizer.py` checks both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from qwen3_jax.train.config import OptimizerSection


def decay_mask(params):
    """True for params that take weight decay: every projection and the embedding, not norm scales.

    Norm scales are recognised by name (`*norm*/scale`), not by rank: stacked layers give the
    per-layer norms a [L, D] shape that a rank test would mistake for a matrix.
    """

    def keep(path, _):
        names = [str(getattr(k, "key", k)) for k in path]
        return not (names and names[-1] == "scale" and any("norm" in n for n in names))

    return jax.tree_util.tree_map_with_path(keep, params)


def make_schedule(cfg: OptimizerSection, total_steps: int):
    """The learning rate as a function of the step (an optax schedule)."""
    peak, warm = cfg.lr, cfg.warmup_steps
    floor = peak * cfg.min_lr_ratio
    warmup = optax.linear_schedule(0.0, peak, max(warm, 1))
    rest = max(total_steps - warm, 1)
    if cfg.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, rest, alpha=cfg.min_lr_ratio)
    elif cfg.schedule == "wsd":
        decay = cfg.decay_steps if cfg.decay_steps is not None else max(total_steps // 10, 1)
        decay = min(max(decay, 1), rest)
        stable = rest - decay

        def decay_fn(step):
            frac = jnp.clip(step / decay, 0.0, 1.0)
            shape = {"linear": 1.0 - frac, "cosine": 0.5 * (1.0 + jnp.cos(jnp.pi * frac)),
                     "sqrt": 1.0 - jnp.sqrt(frac)}[cfg.decay_shape]
            return floor + (peak - floor) * shape

        after = optax.join_schedules([optax.constant_schedule(peak), decay_fn], [stable])
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}")
    if warm == 0:
        return after
    return optax.join_schedules([warmup, after], [warm])


def make_optimizer(cfg: OptimizerSection, total_steps: int) -> optax.GradientTransformation:
    """clip_by_global_norm -> AdamW(schedule, decoupled weight decay masked off norm scales)."""
    adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
        learning_rate=make_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
        weight_decay=cfg.weight_decay, mask=decay_mask)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    return optax.chain(*parts, adamw)


def current_lr(opt_state) -> jax.Array:
    """The learning rate stored by `inject_hyperparams` (the one the latest update applied)."""
    for s in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: hasattr(x, "hyperparams")):
        if hasattr(s, "hyperparams"):
            return s.hyperparams["learning_rate"]
    raise ValueError("optimizer state holds no injected hyperparameters")
