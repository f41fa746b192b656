"""Dual Chunk Attention in the model: its rotary tables, and the attention of one layer.

With `config.dual_chunk_attention_config` set, `transformer.attention_inputs` builds three rotary
tables instead of one (stacked [3, B, T, H]: positions p mod s, min(p mod s + s, c) and
min(2s - 1, c); see `ops.dual_chunk_attention`) from the plain RoPE frequencies (DCA replaces
YaRN, as in vLLM), each multiplied by the row's length factor f(L): a rotated query and a rotated
key then both carry f, so their logit carries f² (f is 1 without original_max_position_embeddings).
L is the number of valid key slots after the call: the prompt length in a prefill, the length
including the new token in decode. A key written to the cache keeps the factor of its own step.

The mask argument of the layers becomes a dict: {"mask": [B, T, S] bool, "positions": [B, T] or
None, "segment_ids": [B, S] int}. "positions" is None when token i of the call sits at position i
(no cache, or a prefill that fills the cache from slot 0): the attention then runs chunk by chunk
with log-sum-exp merges (memory linear in the length), per batch and head shard of the mesh
(`ops.kernel_sharding`). Otherwise (decode, or positions given by the caller) it runs masked over
the keys by their positions; cached keys sit at their slot index.
"""

from __future__ import annotations

import jax.numpy as jnp

from qwen3_jax.config import Qwen3Config
from qwen3_jax.model.rope import apply_rope, rope_cos_sin, rope_frequencies
from qwen3_jax.ops.attention import causal_mask
from qwen3_jax.ops.dual_chunk_attention import (chunk_length, dca_positions, dual_chunk_masked, dual_chunk_prefill,
                                                length_scale)
from qwen3_jax.ops.kernel_sharding import shard_kernel


def attention_inputs(config: Qwen3Config, q_slots, kv_valid, positions, segment_ids, dtype, cached: bool):
    """(cos [3, B, T, H], sin [3, B, T, H], layer inputs dict) of a DCA model's call.

    Args:
      config: a config with `dual_chunk_attention_config`.
      q_slots: [B, T] key slot of each query; kv_valid: [B, S] real key slots.
      positions: [B, T] positions given by the caller, or None (the slots are the positions).
      segment_ids: optional [B, T] packing ids (no cache).
      dtype: dtype of the tables.
      cached: whether the call reads a KV cache.
    """
    d = config.dual_chunk_attention_config
    pos = q_slots if positions is None else positions
    inv_freq, _ = rope_frequencies(config.replace(rope_scaling=None))
    f = length_scale(jnp.sum(kv_valid, axis=1), d.original_max_position_embeddings)[:, None, None]  # [B, 1, 1]
    cos, sin = [], []
    for p in dca_positions(pos, d.chunk_size, d.local_size):
        c, s = rope_cos_sin(p, inv_freq, 1.0, jnp.float32)
        cos.append((c * f).astype(dtype))
        sin.append((s * f).astype(dtype))
    seg = kv_valid.astype(jnp.int32)  # padding 0, real 1
    if segment_ids is not None and not cached:
        seg = jnp.where(kv_valid, segment_ids.astype(jnp.int32), -1)
    inputs = {"mask": causal_mask(q_slots, kv_valid, None if cached else segment_ids),
              "positions": positions, "segment_ids": seg}
    return jnp.stack(cos), jnp.stack(sin), inputs


def _prefill(qi, qs, qn, k, v, segment_ids, chunk_len: int, scale: float):
    """`dual_chunk_prefill` per batch and head shard of the context mesh (`ops.kernel_sharding`): on
    TPU its blocks are Mosaic kernels, which XLA cannot partition."""
    def run(qi, qs, qn, k, v, seg):
        return dual_chunk_prefill(qi, qs, qn, k, v, chunk_len=chunk_len, segment_ids=seg, scale=scale)

    return shard_kernel(run, (qi, qs, qn, k, v, segment_ids), ("B.K.",) * 5 + ("B.",), "B.K.", kv_heads=k.shape[2])


def attend(config: Qwen3Config, q, k, v, cos, sin, inputs: dict, cache, write_at, update_cache):
    """DCA of one layer: q [B, T, N, H], k/v [B, T, K, H] (normed, not rotated).

    Returns (out [B, T, N, H], updated cache or None); `update_cache` is the model's cache writer.
    """
    d = config.dual_chunk_attention_config
    s = chunk_length(d.chunk_size, d.local_size)
    scale = q.shape[-1] ** -0.5
    qi, qs, qn = (apply_rope(q, cos[i], sin[i]) for i in range(3))
    k = apply_rope(k, cos[0], sin[0])
    T = q.shape[1]
    in_order = inputs["positions"] is None
    if cache is None or (in_order and T == cache["k"].shape[-2]):
        if in_order:
            out = _prefill(qi, qs, qn, k, v, inputs["segment_ids"], s, scale)
        else:
            pos = inputs["positions"]
            out = dual_chunk_masked(qi, qs, qn, k, v, inputs["mask"], pos, pos, chunk_len=s, scale=scale)
        return out, (None if cache is None else update_cache(cache, k, v, write_at))
    cache = update_cache(cache, k, v, write_at)
    S = cache["k"].shape[-2]
    q_pos = write_at.astype(jnp.int32)[:, None] + jnp.arange(T, dtype=jnp.int32) if in_order else inputs["positions"]
    kv_pos = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (q.shape[0], S))
    out = dual_chunk_masked(qi, qs, qn, cache["k"], cache["v"], inputs["mask"], q_pos, kv_pos, chunk_len=s,
                            scale=scale, kv_layout="cache")
    return out, cache

