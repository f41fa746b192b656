"""The training loss: next-token cross-entropy in sequence chunks, plus the MoE router losses.

The LM head of a Qwen3 model maps D to V = 151,936 logits per token; for a batch of 8 × 4,096
tokens the float32 logits alone take 20 GB. `chunked_cross_entropy` therefore applies the head to
`chunk` positions at a time inside a `lax.scan` whose body is rematerialised (`jax.checkpoint`):
the forward keeps only each chunk's loss, and the backward recomputes one chunk's logits at a time,
so at most one [B, chunk, V] block exists in either pass.

Only real tokens count: position t predicts token t + 1 when both belong to the same packed
document (segment id, 0 = padding). The last token of a document never predicts the first token of
the next one, and padding predicts nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from qwen3_jax.config import Qwen3Config


def next_token_targets(tokens: jax.Array, segment_ids: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Targets and weights of next-token prediction.

    Args:
      tokens: [B, T] int token ids.
      segment_ids: optional [B, T] packing ids (0 = padding); None = one document per row.

    Returns:
      targets [B, T] int32 (tokens shifted left by one; the last column is 0) and weights [B, T]
      float32, 1 where position t's prediction of t + 1 counts.
    """
    B, T = tokens.shape
    targets = jnp.concatenate([tokens[:, 1:], jnp.zeros((B, 1), tokens.dtype)], axis=1).astype(jnp.int32)
    valid = jnp.arange(T)[None, :] < T - 1
    if segment_ids is not None:
        nxt = jnp.concatenate([segment_ids[:, 1:], jnp.zeros((B, 1), segment_ids.dtype)], axis=1)
        valid = valid & (segment_ids == nxt) & (nxt != 0)
    return targets, jnp.broadcast_to(valid, (B, T)).astype(jnp.float32)


def cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
    """Plain weighted cross-entropy sum (the reference for the chunked form).

    Args:
      logits: [B, T, V]; targets: [B, T] int; weights: [B, T].

    Returns:
      float32 scalar Σ weights · (logsumexp(logits) - logits[target]).
    """
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    tgt = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jnp.sum((lse - tgt) * weights)


def head_weight(params, cfg: Qwen3Config) -> tuple[jax.Array, str]:
    """The LM-head matrix and its einsum spelling: tied [V, D] ("VD") or untied [D, V] ("DV")."""
    if cfg.tie_word_embeddings:
        return params["embed_tokens"]["embedding"], "VD"
    return params["lm_head"]["kernel"], "DV"


def chunked_cross_entropy(hidden: jax.Array, head: jax.Array, targets: jax.Array, weights: jax.Array,
                          chunk: int, head_layout: str = "DV", dtype=None) -> jax.Array:
    """`cross_entropy(hidden @ head, targets, weights)` without materialising the logits.

    Args:
      hidden: [B, T, D] final-normed hidden states.
      head: the LM head, [D, V] ("DV") or the tied embedding [V, D] ("VD").
      targets, weights: [B, T] from `next_token_targets`.
      chunk: positions per chunk (T is padded with zero-weight positions to a multiple); 0 or
        >= T computes the whole sequence in one block.
      head_layout: "DV" or "VD".
      dtype: compute dtype of the head product (inputs are cast; logits accumulate in float32).

    Returns:
      float32 scalar, the weighted sum of token losses (divide by the token count for a mean).
    """
    if head_layout not in ("DV", "VD"):
        raise ValueError(f"head_layout must be 'DV' or 'VD', got {head_layout!r}")
    dtype = dtype or hidden.dtype
    B, T, D = hidden.shape
    eq = "BCD,DV->BCV" if head_layout == "DV" else "BCD,VD->BCV"
    chunk = T if chunk <= 0 or chunk >= T else chunk
    n = -(-T // chunk)
    pad = n * chunk - T
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
        weights = jnp.pad(weights, ((0, 0), (0, pad)))
    xs = (hidden.reshape(B, n, chunk, D).swapaxes(0, 1),  # [n, B, C, D]
          targets.reshape(B, n, chunk).swapaxes(0, 1),  # [n, B, C]
          weights.reshape(B, n, chunk).swapaxes(0, 1))
    w = head.astype(dtype)

    @jax.checkpoint
    def block(h, t, wt):
        logits = jnp.einsum(eq, h.astype(dtype), w, preferred_element_type=jnp.float32)  # [B, C, V]
        logits = nn.with_logical_constraint(logits, ("batch", "length", "act_vocab"))
        return cross_entropy(logits, t, wt)

    def body(total, x):
        return total + block(*x), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), xs)
    return total


def router_z_loss_sum(router_logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Σ over MoE layers and real tokens of logsumexp(router logits)² (ST-MoE's z-loss, unnormalised).

    Args:
      router_logits: [L_moe, B, T, E].
      mask: optional [B, T], 1 for real tokens.
    """
    lse = jax.nn.logsumexp(router_logits.astype(jnp.float32), axis=-1)  # [L, B, T]
    w = jnp.ones(lse.shape[1:], jnp.float32) if mask is None else mask.astype(jnp.float32)
    return jnp.sum(lse * lse * w[None])
