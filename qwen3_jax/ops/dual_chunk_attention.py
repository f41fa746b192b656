"""Dual Chunk Attention (DCA): attention beyond the trained context without new relative distances.

DCA (An et al. 2024, "Training-Free Long-Context Scaling of Large Language Models", arXiv
2402.17463) is what Qwen2.5-1M (arXiv 2501.15383, §4) and the Qwen3 report use to extend the
context at inference. This follows vLLM's implementation (`DualChunkRotaryEmbedding` in
`vllm/model_executor/layers/rotary_embedding/dual_chunk_rope.py` and the DCA flash-attention
backend `vllm/attention/backends/dual_chunk_flash_attn.py`), with a config's
`dual_chunk_attention_config = {chunk_size c, local_size l, original_max_position_embeddings}`
and the chunk length s = c - l:

* keys are rotated at position p mod s (values are unchanged);
* each query is rotated three times: "intra" at p mod s, "successive" at min(p mod s + s, c) and
  "inter" at the constant min(2s - 1, c);
* a query at p attends to the keys of its own chunk (floor(j / s) == floor(p / s), causally) with
  its intra copy, to the keys of the chunk before with its successive copy, and to all earlier
  chunks with its inter copy; the three parts are combined exactly by log-sum-exp, so it is one
  softmax over all visible keys with these logits. Relative distances stay below c.
* length scaling: with original_max_position_embeddings = o > 0, token t of a sequence whose
  length is L carries f = max(1, 0.1·ln(L / o) + 1) on its query and on its key, so a logit gets
  f_query·f_key (vLLM scales the key before writing it to the cache and the query again). `L` is
  the prompt length in a prefill and the length including the new token in decode; a cached key
  keeps the factor of the step that wrote it. This module takes q and k already scaled (the model
  scales its rotary tables; see `model.rope`).

The functions take the three query copies and the keys already rotated; the model builds them
(`model.dual_chunk`). `dual_chunk_prefill` works chunk by chunk on a prefill whose token i sits at
position i, through a per-block attention that returns log-sum-exps (`ops.block_attention`, or
the flash kernel), so no piece is larger than one chunk of queries against one chunk of keys;
`dual_chunk_masked` handles any queries against any keys (decode against a KV cache) with a
boolean mask and the positions of both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qwen3_jax.ops.block_attention import NO_KEYS, BlockFn, default_block_fn, merge


def chunk_length(chunk_size: int, local_size: int) -> int:
    """s = chunk_size - local_size, the period of the key positions."""
    s = int(chunk_size) - int(local_size)
    if s <= 0:
        raise ValueError(f"dual chunk attention needs chunk_size > local_size, got {chunk_size} and {local_size}")
    return s


def dca_positions(positions: jax.Array, chunk_size: int, local_size: int):
    """Rotary positions of DCA for absolute `positions` (int array, any shape).

    Returns:
      (key / intra-query positions p mod s, successive-query positions min(p mod s + s, c),
       inter-query positions min(2s - 1, c) broadcast to the shape), all int32.
    """
    s = chunk_length(chunk_size, local_size)
    intra = jnp.asarray(positions, jnp.int32) % s
    succ = jnp.minimum(intra + s, chunk_size)
    inter = jnp.full_like(intra, min(2 * s - 1, chunk_size))
    return intra, succ, inter


def length_scale(length, original_max_position_embeddings: int | None):
    """f(L) = max(1, 0.1·ln(L / o) + 1) (float32, L an int array); 1 when o is 0 or None."""
    length = jnp.asarray(length, jnp.float32)
    if not original_max_position_embeddings:
        return jnp.ones_like(length)
    f = 0.1 * jnp.log(jnp.maximum(length, 1.0) / float(original_max_position_embeddings)) + 1.0
    return jnp.maximum(f, 1.0)


def dual_chunk_prefill(q_intra: jax.Array, q_succ: jax.Array, q_inter: jax.Array, k: jax.Array, v: jax.Array, *,
                       chunk_len: int, segment_ids: jax.Array | None = None, scale: float | None = None,
                       block_fn: BlockFn | None = None) -> jax.Array:
    """DCA of a sequence against itself, token i at position i, chunk by chunk.

    Args:
      q_intra, q_succ, q_inter: [B, T, N, H] the queries rotated at the three DCA positions.
      k, v: [B, T, K, H], keys rotated at i mod chunk_len.
      chunk_len: s = chunk_size - local_size.
      segment_ids: optional [B, T]; a query sees keys of its own id only (padding: give it its own id).
      scale: logit scale (default H ** -0.5).
      block_fn: per-block attention returning (out, lse) (default: `default_block_fn()`).

    Returns:
      [B, T, N, H] in q's dtype.
    """
    B, T, N, H = q_intra.shape
    s = int(chunk_len)
    scale = H ** -0.5 if scale is None else scale
    block_fn = default_block_fn() if block_fn is None else block_fn

    def seg(a, b):
        return None if segment_ids is None else segment_ids[:, a:b]

    outs = []
    for n, a in enumerate(range(0, T, s)):
        b = min(a + s, T)
        pos = jnp.broadcast_to(jnp.arange(b - a, dtype=jnp.int32), (B, b - a))
        # intra: the chunk itself, causally
        parts = [block_fn(q_intra[:, a:b], k[:, a:b], v[:, a:b], segment_ids=seg(a, b), kv_segment_ids=seg(a, b),
                          q_positions=pos, kv_positions=pos, causal=True, scale=scale)]
        if n >= 1:  # successive: the whole previous chunk
            parts.append(block_fn(q_succ[:, a:b], k[:, a - s:a], v[:, a - s:a], segment_ids=seg(a, b),
                                  kv_segment_ids=seg(a - s, a), causal=False, scale=scale))
        for m in range(n - 1):  # inter: every chunk before that, one chunk of keys at a time
            parts.append(block_fn(q_inter[:, a:b], k[:, m * s:(m + 1) * s], v[:, m * s:(m + 1) * s],
                                  segment_ids=seg(a, b), kv_segment_ids=seg(m * s, (m + 1) * s), causal=False,
                                  scale=scale))
        outs.append(merge(parts)[0] if len(parts) > 1 else parts[0][0])
    return jnp.concatenate([o.astype(q_intra.dtype) for o in outs], axis=1)


# kv_layout -> einsum spelling of keys and values (as `ops.attention`).
_KV_LAYOUTS = {"BSKH": ("BSKH", "BSKH"), "cache": ("BKSH", "BKHS")}


def _masked_part(q, k, v, mask, scale, kv_layout):
    """(out float32 [B, T, N, H], lse [B, T, N]) of q against all keys under a [B, T, S] mask."""
    k_eq, v_eq = _KV_LAYOUTS[kv_layout]
    B, T, N, H = q.shape
    K = k.shape[k_eq.index("K")]
    qg = q.reshape(B, T, K, N // K, H)
    s = jnp.einsum(f"BTKGH,{k_eq}->BKGTS", qg, k, preferred_element_type=jnp.float32) * scale
    s = jnp.where(mask[:, None, None], s, -jnp.inf)
    m = jnp.max(s, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    p = jnp.exp(s - m)
    l = jnp.sum(p, axis=-1, keepdims=True)
    seen = l > 0
    l_safe = jnp.where(seen, l, 1.0)
    lse = jnp.where(seen, m + jnp.log(l_safe), NO_KEYS)[..., 0]
    out = jnp.einsum(f"BKGTS,{v_eq}->BTKGH", (p / l_safe).astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.reshape(B, T, N, H), lse.transpose(0, 3, 1, 2).reshape(B, T, N)


def dual_chunk_masked(q_intra: jax.Array, q_succ: jax.Array, q_inter: jax.Array, k: jax.Array, v: jax.Array,
                      mask: jax.Array, q_positions: jax.Array, kv_positions: jax.Array, *, chunk_len: int,
                      scale: float | None = None, kv_layout: str = "BSKH") -> jax.Array:
    """DCA of any queries against any keys under a boolean mask (decode against a KV cache).

    The chunk of a token is floor(position / chunk_len); within `mask`, a key of the query's chunk
    is attended with the intra copy, one of the chunk before with the successive copy, any earlier
    one with the inter copy. Scores are [B, T, S] (T = 1 in decode).

    Args:
      q_intra, q_succ, q_inter: [B, T, N, H].
      k, v: keys and values, [B, S, K, H] ("BSKH") or the cache layout keys [B, K, S, H] and
        values [B, K, H, S] ("cache"); keys rotated at position mod chunk_len.
      mask: [B, T, S] bool, which keys each query may see at all (causality, padding).
      q_positions: [B, T]; kv_positions: [B, S] absolute positions.
      chunk_len: s = chunk_size - local_size.
      scale: logit scale (default H ** -0.5).
      kv_layout: "BSKH" or "cache".

    Returns:
      [B, T, N, H] in q's dtype.
    """
    if kv_layout not in _KV_LAYOUTS:
        raise ValueError(f"kv_layout must be one of {list(_KV_LAYOUTS)}, got {kv_layout!r}")
    H = q_intra.shape[-1]
    scale = H ** -0.5 if scale is None else scale
    qc = (q_positions // chunk_len)[:, :, None]
    kc = (kv_positions // chunk_len)[:, None, :]
    pieces = ((q_intra, kc == qc), (q_succ, kc == qc - 1), (q_inter, kc <= qc - 2))
    parts = [_masked_part(q, k, v, mask & rel, scale, kv_layout) for q, rel in pieces]
    return merge(parts)[0].astype(q_intra.dtype)

