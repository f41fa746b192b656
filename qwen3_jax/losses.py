"""The MoE load-balancing loss of the reference (`load_balancing_loss_func`).

    L_aux = E · Σ_e f_e · P_e

f_e is the fraction of top-k assignments that go to expert e (counted over all k slots), P_e the mean
softmax probability of e (full softmax, before top-k renormalisation); the tokens of every MoE
layer are pooled into one set, and padding tokens are left out of both means. Perfectly uniform
routing gives L_aux = k.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def load_balancing_loss(router_logits: jax.Array, top_k: int, attention_mask: jax.Array | None = None) -> jax.Array:
    """Args:
      router_logits: [L_moe, B, T, E] (or [L_moe, N, E]) router logits of every MoE layer.
      top_k: experts per token.
      attention_mask: optional [B, T] (or [N]) with 1 for real tokens.

    Returns:
      The scalar loss (float32); multiply by `router_aux_loss_coef` to add it to the LM loss.
    """
    E = router_logits.shape[-1]
    logits = router_logits.reshape(router_logits.shape[0], -1, E).astype(jnp.float32)  # [L, N, E]
    probs = jax.nn.softmax(logits, axis=-1)
    _, ids = jax.lax.top_k(probs, top_k)  # [L, N, k]
    counts = jax.nn.one_hot(ids, E, dtype=jnp.float32).sum(axis=2)  # [L, N, E]
    if attention_mask is None:
        w = jnp.ones(logits.shape[:2], jnp.float32)
    else:
        w = jnp.broadcast_to(attention_mask.reshape(1, -1).astype(jnp.float32), logits.shape[:2])
    rows = jnp.sum(w)
    tokens_per_expert = jnp.einsum("LN,LNE->E", w, counts) / rows
    prob_per_expert = jnp.einsum("LN,LNE->E", w, probs) / rows
    return E * jnp.sum(tokens_per_expert * prob_per_expert)
