"""Dot-product attention with grouped KV heads, and the masks it takes.

GQA is computed by splitting the N query heads into K groups of G = N / K (query head n uses KV
head n // G, as `repeat_kv` does in the reference), so K and V are never repeated in memory.
Scores and softmax run in float32; probabilities are cast to the compute dtype for the PV product.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG = jnp.finfo(jnp.float32).min
# kv_layout -> einsum spelling of the keys and of the values.
_KV_LAYOUTS = {"BSKH": ("BSKH", "BSKH"), "cache": ("BKSH", "BKHS")}


def causal_mask(q_slots: jax.Array, kv_valid: jax.Array, segment_ids: jax.Array | None = None,
                kv_segment_ids: jax.Array | None = None) -> jax.Array:
    """Boolean mask [B, T, S]: query at slot q_slots[b, t] may see key slot s.

    Args:
      q_slots: [B, T] index of each query among the S key slots (its own slot included).
      kv_valid: [B, S] which key slots hold real tokens (padding and empty cache slots are False).
      segment_ids, kv_segment_ids: optional [B, T] / [B, S] packing ids; tokens only see their own
        segment.
    """
    s = jnp.arange(kv_valid.shape[1], dtype=jnp.int32)
    mask = (s[None, None, :] <= q_slots[:, :, None]) & kv_valid[:, None, :]
    if segment_ids is not None:
        kv_seg = segment_ids if kv_segment_ids is None else kv_segment_ids
        mask = mask & (segment_ids[:, :, None] == kv_seg[:, None, :])
    return mask


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                          scale: float, kv_layout: str = "BSKH", extra_kv=None) -> jax.Array:
    """softmax(q·kᵀ·scale + mask)·v with grouped KV heads.

    Args:
      q: [B, T, N, H] queries.
      k, v: keys and values; kv_layout "BSKH": both [B, S, K, H] (as the projections give them);
        "cache": keys [B, K, S, H] and values [B, K, H, S] (the KV cache's layout, see
        `model.attention.update_cache`). N % K == 0.
      mask: [B, T, S] boolean, True where attention is allowed.
      scale: logit scale (head_dim ** -0.5).
      kv_layout: "BSKH" or "cache".
      extra_kv: optional (k2, v2, mask2): more keys and values [B, S2, K, H] with their mask
        [B, T, S2], attended together with k, v (one softmax over both). Decode passes the cache as
        it was before this step plus the step's own key and value, so that the attention does not
        read the updated cache (see `model.attention.Attention`).

    Returns:
      [B, T, N, H] in q's dtype.
    """
    if kv_layout not in _KV_LAYOUTS:
        raise ValueError(f"kv_layout must be one of {list(_KV_LAYOUTS)}, got {kv_layout!r}")
    k_eq, v_eq = _KV_LAYOUTS[kv_layout]
    B, T, N, H = q.shape
    K = k.shape[k_eq.index("K")]
    qg = q.reshape(B, T, K, N // K, H)  # [B, T, K, G, H]
    scores = jnp.einsum(f"BTKGH,{k_eq}->BKGTS", qg, k, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(mask[:, None, None, :, :], scores, _NEG)
    S = scores.shape[-1]
    if extra_kv is not None:
        k2, v2, mask2 = extra_kv
        scores2 = jnp.einsum("BTKGH,BSKH->BKGTS", qg, k2, preferred_element_type=jnp.float32) * scale
        scores = jnp.concatenate([scores, jnp.where(mask2[:, None, None, :, :], scores2, _NEG)], axis=-1)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)  # [B, K, G, T, S (+ S2)]
    out = jnp.einsum(f"BKGTS,{v_eq}->BTKGH", probs[..., :S], v, preferred_element_type=jnp.float32)
    if extra_kv is not None:
        out = out + jnp.einsum("BKGTS,BSKH->BTKGH", probs[..., S:], v2, preferred_element_type=jnp.float32)
    return out.reshape(B, T, N, H).astype(q.dtype)


def prefix_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, scale: float,
                     max_blocks: int = 8, min_block: int = 128) -> jax.Array:
    """`dot_product_attention` for a causal call whose query t sits at key slot t (k, v: [B, T, K, H]).

    The queries are cut into up to `max_blocks` blocks; block [a, b) only reads keys [0, b), which
    skips the products and softmax work on keys that the causal mask hides anyway (3/8 of it with 4
    blocks). Requires mask[:, t, s] False for s > t (true of a causal prefill from slot 0). Rows of
    real queries are unchanged; a query that sees no key at all (padding) gets a different but
    equally meaningless average.
    """
    T = q.shape[1]
    size = max(min_block, -(-T // max_blocks))
    if T <= size:
        return dot_product_attention(q, k, v, mask, scale)
    outs = []
    for a in range(0, T, size):
        b = min(T, a + size)
        outs.append(dot_product_attention(q[:, a:b], k[:, :b], v[:, :b], mask[:, a:b, :b], scale))
    return jnp.concatenate(outs, axis=1)
