"""Plain-JAX attention with the flash kernels' interface: the reference they are tested against.

It builds the whole [B, N, T, S] score matrix (memory grows with T·S), so it is for tests and
small shapes. Semantics shared with `flash_attention`:

* query heads grouped on KV heads (query head n reads KV head n // (N / K));
* query t may see key s when (not causal or kv_pos[s] <= q_pos[t]) and, with segments,
  segment_ids[t] == kv_segment_ids[s];
* a row that sees no key gets output 0 and log-sum-exp `NO_KEYS` (-1e30).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qwen3_jax.ops.block_attention import NO_KEYS
from qwen3_jax.ops.flash_common import positions, segments


def attention_mask(B: int, T: int, S: int, *, segment_ids=None, kv_segment_ids=None, q_positions=None,
                   kv_positions=None, causal: bool = True) -> jax.Array:
    """[B, T, S] bool mask of the flash interface (positions default to the last T of S keys)."""
    q_pos = positions(q_positions, B, T, S - T, "q_positions")
    kv_pos = positions(kv_positions, B, S, 0, "kv_positions")
    q_seg, kv_seg = segments(segment_ids, kv_segment_ids, B, T, S)
    mask = jnp.ones((B, T, S), bool)
    if causal:
        mask &= kv_pos[:, None, :] <= q_pos[:, :, None]
    if q_seg is not None:
        mask &= q_seg[:, :, None] == kv_seg[:, None, :]
    return mask


def attention_reference(q, k, v, *, segment_ids=None, kv_segment_ids=None, q_positions=None, kv_positions=None,
                        causal: bool = True, scale: float | None = None, return_lse: bool = False):
    """softmax(q·kᵀ·scale, masked)·v; q [B, T, N, H], k/v [B, S, K, H] -> [B, T, N, H] (+ lse [B, T, N]).

    Scores and softmax in float32; the probabilities are cast to v's dtype for the product with v.
    """
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    scale = H ** -0.5 if scale is None else scale
    mask = attention_mask(B, T, S, segment_ids=segment_ids, kv_segment_ids=kv_segment_ids, q_positions=q_positions,
                          kv_positions=kv_positions, causal=causal)
    qg = q.reshape(B, T, K, N // K, H)
    s = jnp.einsum("btkgh,bskh->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
    s = jnp.where(mask[:, None, None], s, -jnp.inf)
    m = jnp.max(s, axis=-1, keepdims=True)
    m_safe = jnp.where(jnp.isfinite(m), m, 0.0)
    p = jnp.where(mask[:, None, None], jnp.exp(s - m_safe), 0.0)
    l = jnp.sum(p, axis=-1, keepdims=True)
    seen = l > 0
    p = p / jnp.where(seen, l, 1.0)
    out = jnp.einsum("bkgts,bskh->btkgh", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    out = out.reshape(B, T, N, H).astype(q.dtype)
    if not return_lse:
        return out
    lse = jnp.where(seen, m_safe + jnp.log(jnp.where(seen, l, 1.0)), NO_KEYS)[..., 0]  # [B, K, G, T]
    return out, lse.transpose(0, 3, 1, 2).reshape(B, T, N)
