"""GRPO: group-normalised advantages and the clipped policy-gradient objective with a KL penalty.

Group Relative Policy Optimization (DeepSeekMath, arXiv 2402.03300; used for Qwen3's reasoning RL,
arXiv 2505.09388 §4.2). For each prompt G completions are sampled; completion i of a group gets

    A_i = (r_i - mean(r)) / (std(r) + eps)           (std over the group, population form)

and every token t of it the per-token objective, maximised:

    ratio = exp(logp - logp_old)
    J = min(ratio · A, clip(ratio, 1 - eps_low, 1 + eps_high) · A) - beta · KL
    KL = exp(logp_ref - logp) - (logp_ref - logp) - 1      (the k3 estimator, >= 0)

``logp_old`` is the policy that sampled the batch (equal to ``logp`` on the first update of a
batch, so the ratio is 1); with ``num_iterations > 1`` the later updates move away from it and the
clip bounds them. A group whose rewards are all equal gets zero advantage: it contributes only
its KL term. Aggregation: ``"token"`` averages over every completion token of the batch (DAPO,
arXiv 2503.14476), ``"sequence"`` averages within each completion first (the original GRPO).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class GRPOLossConfig:
    """The objective's constants.

    Attributes:
        epsilon: lower clip range (ratio >= 1 - epsilon).
        epsilon_high: upper clip range; None uses ``epsilon`` (DAPO's clip-higher raises it).
        beta: weight of the KL penalty to the reference model (0 disables it and the reference).
        aggregation: "token" or "sequence" (see the module docstring).
    """

    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.04
    aggregation: str = "token"

    def __post_init__(self):
        if not 0 < self.epsilon < 1:
            raise ValueError(f"epsilon must lie in (0, 1), got {self.epsilon}")
        if self.epsilon_high is not None and not self.epsilon_high > 0:
            raise ValueError(f"epsilon_high must be > 0, got {self.epsilon_high}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.aggregation not in ("token", "sequence"):
            raise ValueError(f"aggregation must be 'token' or 'sequence', got {self.aggregation!r}")

    @property
    def high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


def group_advantages(rewards, group_size: int, eps: float = 1e-4, scale: bool = True) -> np.ndarray:
    """Group-normalised advantages.

    Args:
        rewards: [N] rewards, N = prompts × group_size, the completions of a prompt adjacent.
        group_size: G.
        eps: added to the group std.
        scale: divide by the std (False: only subtract the group mean, Dr. GRPO's choice).

    Returns:
        float32 [N] advantages (zero for a group of equal rewards).
    """
    r = np.asarray(rewards, np.float64)
    if r.ndim != 1 or r.shape[0] % group_size:
        raise ValueError(f"rewards must be [prompts * group_size]; got shape {r.shape} for group_size {group_size}")
    g = r.reshape(-1, group_size)
    adv = g - g.mean(axis=1, keepdims=True)
    if scale:
        adv = adv / (g.std(axis=1, keepdims=True) + eps)
    return adv.reshape(-1).astype(np.float32)


def grpo_objective(logp: jax.Array, old_logp: jax.Array, ref_logp: jax.Array | None, advantages: jax.Array,
                   mask: jax.Array, config: GRPOLossConfig) -> tuple[jax.Array, dict]:
    """The GRPO loss (to minimise) and its statistics.

    Args:
        logp: [B, T] log-probabilities of the scored tokens under the policy being trained.
        old_logp: [B, T] the same under the policy that sampled them (no gradient flows).
        ref_logp: [B, T] under the frozen reference model, or None when ``config.beta == 0``.
        advantages: [B] one per completion.
        mask: [B, T] 1 on completion tokens (the positions whose next token the policy generated).
        config: epsilons, beta, aggregation.

    Returns:
        (scalar loss, {"kl", "clip_fraction", "clip_low", "clip_high", "ratio"}: means over the
        masked tokens).
    """
    mask = mask.astype(jnp.float32)
    old_logp = jax.lax.stop_gradient(old_logp)
    ratio = jnp.exp(logp - old_logp)
    adv = advantages.astype(jnp.float32)[:, None]
    clipped = jnp.clip(ratio, 1.0 - config.epsilon, 1.0 + config.high)
    per_token = jnp.minimum(ratio * adv, clipped * adv)
    if config.beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs the reference log-probabilities")
        d = jax.lax.stop_gradient(ref_logp) - logp
        kl = jnp.exp(d) - d - 1.0
        per_token = per_token - config.beta * kl
    else:
        kl = jnp.zeros_like(logp)
    n_tok = jnp.maximum(mask.sum(), 1.0)
    if config.aggregation == "token":
        loss = -jnp.sum(per_token * mask) / n_tok
    else:
        per_seq = jnp.sum(per_token * mask, axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
        has = (mask.sum(axis=1) > 0).astype(jnp.float32)
        loss = -jnp.sum(per_seq * has) / jnp.maximum(has.sum(), 1.0)
    # The clip is active where the clipped term is the minimum: ratio beyond the bound on the side
    # the advantage pushes towards.
    low = (ratio < 1.0 - config.epsilon) & (adv < 0)
    high = (ratio > 1.0 + config.high) & (adv > 0)
    mean = lambda x: jnp.sum(x.astype(jnp.float32) * mask) / n_tok  # noqa: E731
    stats = {"kl": mean(kl), "clip_fraction": mean(low | high), "clip_low": mean(low), "clip_high": mean(high),
             "ratio": mean(ratio)}
    return loss, stats


def policy_loss(module, params, batch: dict, config: GRPOLossConfig, chunk: int = 0,
                temperature: float = 1.0) -> tuple[jax.Array, dict]:
    """The GRPO loss of a rollout batch under ``params`` (differentiable in ``params``).

    Args:
        module: the policy's `qwen3_jax.Qwen3` module.
        params: the policy's params.
        batch: ``tokens``, ``segment_ids``, ``positions``, ``completion_mask`` [B, T];
            ``advantages`` [B]; ``old_logp`` [B, T] (the sampling policy's scores; pass the
            current ones on the first update of a batch); ``ref_logp`` [B, T] when beta > 0.
        config: the objective's constants.
        chunk: LM-head chunk (see `logprobs.token_logprobs`).
        temperature: the sampling temperature (logits are divided by it).

    Returns:
        (loss, stats) with the `grpo_objective` statistics plus the mean token ``entropy``.
    """
    from qwen3_jax.post.logprobs import token_logprobs

    logp, entropy = token_logprobs(module, params, batch["tokens"], batch["segment_ids"], batch["positions"],
                                   chunk, temperature)
    mask = batch["completion_mask"]
    loss, stats = grpo_objective(logp, batch["old_logp"], batch.get("ref_logp"), batch["advantages"], mask, config)
    m = mask.astype(jnp.float32)
    stats["entropy"] = jnp.sum(jax.lax.stop_gradient(entropy) * m) / jnp.maximum(m.sum(), 1.0)
    return loss, stats
