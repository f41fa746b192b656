"""MoE load-balancing losses: the reference's micro-batch form and the global-batch form.

    L_aux = E · Σ_e f_e · P_e

f_e is the fraction of top-k assignments that go to expert e (counted over all k slots), P_e the mean
softmax probability of e (full softmax, before top-k renormalisation); the tokens of every MoE
layer are pooled into one set, and padding tokens are left out of both means. Perfectly uniform
routing gives L_aux = k.

The global-batch variant of the Qwen3 training recipe (`RouterStats`, `global_batch_balance_loss`)
is described below `load_balancing_loss`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from qwen3_jax.ops.moe import router_top_k


def load_balancing_loss(router_logits: jax.Array, top_k: int, attention_mask: jax.Array | None = None) -> jax.Array:
    """Args:
      router_logits: [L_moe, B, T, E] (or [L_moe, N, E]) router logits of every MoE layer.
      top_k: experts per token.
      attention_mask: optional [B, T] (or [N]) with 1 for real tokens.

    Returns:
      The scalar loss (float32); multiply by `router_aux_loss_coef` to add it to the LM loss.
    """
    E = router_logits.shape[-1]
    logits = router_logits.reshape(router_logits.shape[0], -1, E)  # [L, M, E]
    probs, _, ids = router_top_k(logits, top_k)  # [L, M, E], ids [L, M, R]
    counts = jax.nn.one_hot(ids, E, dtype=jnp.float32).sum(axis=2)  # [L, M, E]
    if attention_mask is None:
        w = jnp.ones(logits.shape[:2], jnp.float32)
    else:
        w = jnp.broadcast_to(attention_mask.reshape(1, -1).astype(jnp.float32), logits.shape[:2])
    rows = jnp.sum(w)
    tokens_per_expert = jnp.einsum("LM,LME->E", w, counts) / rows
    prob_per_expert = jnp.einsum("LM,LME->E", w, probs) / rows
    return E * jnp.sum(tokens_per_expert * prob_per_expert)


# --- Global-batch load balancing (Qwen3 technical report; Qiu et al. 2025) -------------------------
#
# The micro-batch loss above balances every batch on its own, which pushes each sequence towards
# all experts. The global-batch loss counts expert selections f_e over the whole global batch (all
# data-parallel shards, all gradient-accumulation micro-batches) before multiplying them with the
# router probabilities, so only the corpus-level load is balanced. f carries no gradient (top-k
# counts), so the loss is linear in the per-token probabilities and splits exactly into one share per
# shard and micro-batch once the global counts are known:
#
#     L = E · mean_l Σ_e f_le · P_le,   f_le = C_le / T,   P_le = Σ_{shards, micro-batches} S_le / T
#
# (C: selections, S: probability sums, T: tokens of the global batch). A training loop therefore
# (1) computes `router_stats` per micro-batch, (2) sums their counts over micro-batches and shards
# (the counts need only the router, e.g. from a forward pass without gradients, or the summed stats
# of the accumulation loop), then (3) adds `global_batch_balance_loss(stats_mb, global_stats)` to
# each micro-batch's loss; the shares add up to the global loss and its gradient.


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class RouterStats:
    """Sufficient statistics of routing over a set of tokens; add them to pool sets of tokens.

    Attributes:
      counts: [L, E] float32 top-k selections of each expert in each MoE layer (no gradient).
      prob_sum: [L, E] float32 sums of the full softmax probabilities (differentiable).
      tokens: float32 scalar, number of (unmasked) tokens.
    """

    counts: jax.Array
    prob_sum: jax.Array
    tokens: jax.Array

    def __add__(self, other: "RouterStats") -> "RouterStats":
        return jax.tree.map(jnp.add, self, other)


def router_stats(router_logits: jax.Array, top_k: int, attention_mask: jax.Array | None = None) -> RouterStats:
    """Routing statistics of one micro-batch (or shard).

    Args:
      router_logits: [L_moe, B, T, E] (or [L_moe, N, E]) router logits of every MoE layer.
      top_k: experts per token.
      attention_mask: optional [B, T] (or [N]) with 1 for real tokens.
    """
    E = router_logits.shape[-1]
    logits = router_logits.reshape(router_logits.shape[0], -1, E)  # [L, M, E]
    probs, _, ids = router_top_k(logits, top_k)
    w = (jnp.ones(logits.shape[1], jnp.float32) if attention_mask is None
         else attention_mask.reshape(-1).astype(jnp.float32))
    counts = jnp.einsum("M,LMRE->LE", w, jax.nn.one_hot(ids, E, dtype=jnp.float32))
    return RouterStats(counts=jax.lax.stop_gradient(counts), prob_sum=jnp.einsum("M,LME->LE", w, probs),
                       tokens=jnp.sum(w))


def psum_router_stats(stats: RouterStats, axis_names) -> RouterStats:
    """Sums statistics over mesh axes inside `shard_map` (e.g. `("data", "fsdp", "expert")`)."""
    return jax.tree.map(lambda v: jax.lax.psum(v, axis_names), stats)


def global_batch_balance_loss(stats: RouterStats, global_stats: RouterStats | None = None,
                              per_layer: bool = True) -> jax.Array:
    """Global-batch load-balancing loss, or this micro-batch's additive share of it.

    Args:
      stats: statistics of the tokens whose probabilities take the gradient (a micro-batch, a
        shard, or the whole batch).
      global_stats: statistics of the whole global batch (summed over micro-batches and shards);
        None means `stats` is the whole batch. Only its counts and tokens are used, without gradient.
      per_layer: average the loss of each MoE layer (as Qwen3/Megatron do); False pools the tokens
        of all layers into one set like the reference's `load_balancing_loss`. With one MoE layer
        both equal `load_balancing_loss` of the global batch.

    Returns:
      float32 scalar; summed over all micro-batches and shards it is the loss of the global batch.
      Uniform routing gives top_k. Multiply by `router_aux_loss_coef`.
    """
    g = stats if global_stats is None else global_stats
    counts, tokens = jax.lax.stop_gradient(g.counts), jax.lax.stop_gradient(g.tokens)
    E = counts.shape[-1]
    if per_layer:
        f = counts / tokens  # [L, E], sums to top_k over E
        return E * jnp.mean(jnp.sum(f * stats.prob_sum / tokens, axis=-1))
    L = counts.shape[0]
    f = counts.sum(0) / (L * tokens)
    return E * jnp.sum(f * stats.prob_sum.sum(0) / (L * tokens))


def sharded_balance_loss(router_logits: jax.Array, top_k: int, axis_names, attention_mask: jax.Array | None = None,
                         per_layer: bool = True) -> jax.Array:
    """Inside `shard_map`: this shard's share of the global-batch loss over `axis_names`.

    Counts and token totals are `psum`-ed over the data-parallel axes; `psum` of the returned shares
    (or of their gradients, as data parallelism does anyway) gives the global-batch loss. Under plain
    `jax.jit` with sharded arrays no collective needs writing: `global_batch_balance_loss(
    router_stats(global_logits, k))` sums over the global batch and XLA inserts the all-reduce.
    """
    local = router_stats(router_logits, top_k, attention_mask)
    return global_batch_balance_loss(local, psum_router_stats(local, axis_names), per_layer)


def balance_loss_term(cfg, stats: RouterStats, global_stats: RouterStats | None = None) -> jax.Array:
    """`router_aux_loss_coef` (from the model config) × `global_batch_balance_loss`: add it to the LM loss."""
    return cfg.router_aux_loss_coef * global_batch_balance_loss(stats, global_stats)
