"""Attention over one block of keys that also returns the log-sum-exp, and the merge of such parts.

Ring attention and Dual Chunk Attention both split the keys of a query into parts, attend to each
part separately and combine the results exactly: for parts with outputs o_i and log-sum-exps l_i
(of the scaled logits of that part), the attention over their union is

    l = logsumexp_i(l_i),    o = sum_i exp(l_i - l) · o_i.

`attention_with_lse` is the plain-JAX part function (it materialises the [T, S] scores of the
block, so callers keep blocks small or use a kernel). Its signature is the one of the project's
flash kernel (`ops.flash_attention` with `return_lse=True`), so either can be passed where a
`block_fn` is asked for; `default_block_fn` picks the kernel on TPU.

Conventions: q [B, T, N, H], k and v [B, S, K, H] with N % K == 0 (query head n uses KV head
n // (N / K), as the reference's `repeat_kv`); lse [B, T, N] float32. A query that sees no key of
the block gets o = 0 and lse = `NO_KEYS` (a large negative finite number, so merges stay finite).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from qwen3_jax.sharding.platform import target_platform

NO_KEYS = -1e30  # lse of a row that sees no key: exp(NO_KEYS - l) is 0 for any real l

# block_fn(q, k, v, *, segment_ids, kv_segment_ids, q_positions, kv_positions, causal, scale)
#   -> (out [B, T, N, H], lse [B, T, N] float32)
BlockFn = Callable[..., tuple[jax.Array, jax.Array]]


def default_block_fn() -> BlockFn:
    """The per-block attention for this backend: the Pallas flash kernel on TPU, else the plain one.

    The kernel runs per batch and head shard of the context mesh (`ops.kernel_sharding`; directly
    inside a `shard_map` over all axes, such as ring attention's). (On GPU the project's "flash"
    path is cuDNN's fused attention, which returns no lse.)
    """
    if target_platform() == "tpu":  # the platform compiled for (context mesh), not the host's
        return sharded_flash_block
    return attention_with_lse


def _position_dims(pos) -> str | None:
    """Dimension string of a positions argument: None for absent or a Python offset, else by rank."""
    if pos is None or isinstance(pos, int):
        return None
    return "B."[:jnp.ndim(pos)]


def sharded_flash_block(q: jax.Array, k: jax.Array, v: jax.Array, *, segment_ids: jax.Array | None = None,
                        kv_segment_ids: jax.Array | None = None, q_positions=None, kv_positions=None,
                        causal: bool = True, scale: float | None = None) -> tuple[jax.Array, jax.Array]:
    """`flash_attention(..., return_lse=True)` (a `BlockFn`) per batch and head shard of the context mesh."""
    from qwen3_jax.ops.flash_attention import flash_attention
    from qwen3_jax.ops.kernel_sharding import shard_kernel

    def run(q, k, v, seg, kv_seg, q_pos, kv_pos):
        return flash_attention(q, k, v, segment_ids=seg, kv_segment_ids=kv_seg, q_positions=q_pos,
                               kv_positions=kv_pos, causal=causal, scale=scale, return_lse=True)

    dims = ("B.K.", "B.K.", "B.K.", "B.", "B.", _position_dims(q_positions), _position_dims(kv_positions))
    return shard_kernel(run, (q, k, v, segment_ids, kv_segment_ids, q_positions, kv_positions), dims,
                        ("B.K.", "B.K"), kv_heads=k.shape[2])


def attention_with_lse(q: jax.Array, k: jax.Array, v: jax.Array, *, segment_ids: jax.Array | None = None,
                       kv_segment_ids: jax.Array | None = None, q_positions: jax.Array | None = None,
                       kv_positions: jax.Array | None = None, causal: bool = True,
                       scale: float | None = None) -> tuple[jax.Array, jax.Array]:
    """softmax(q·kᵀ·scale + mask)·v and the row log-sum-exp, in plain JAX.

    Args:
      q: [B, T, N, H]; k, v: [B, S, K, H].
      segment_ids, kv_segment_ids: optional [B, T] / [B, S] ids; a query sees keys of its own id
        only (kv_segment_ids defaults to segment_ids, which needs S == T).
      q_positions, kv_positions: [B, T] / [B, S] (default 0..T-1 / 0..S-1); with `causal` a query
        sees the keys whose position is <= its own.
      causal: apply the position mask.
      scale: logit scale (default H ** -0.5).

    Returns:
      (out [B, T, N, H] in q's dtype, lse [B, T, N] float32).
    """
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    if N % K:
        raise ValueError(f"query heads {N} are not a multiple of KV heads {K}")
    scale = H ** -0.5 if scale is None else scale
    qg = q.reshape(B, T, K, N // K, H)
    s = jnp.einsum("BTKGH,BSKH->BKGTS", qg, k, preferred_element_type=jnp.float32) * scale
    mask = jnp.ones((B, T, S), bool)
    if causal:
        qp = jnp.broadcast_to(jnp.arange(T), (B, T)) if q_positions is None else q_positions
        kp = jnp.broadcast_to(jnp.arange(S), (B, S)) if kv_positions is None else kv_positions
        mask = mask & (kp[:, None, :] <= qp[:, :, None])
    if segment_ids is not None:
        kv_seg = segment_ids if kv_segment_ids is None else kv_segment_ids
        mask = mask & (segment_ids[:, :, None] == kv_seg[:, None, :])
    s = jnp.where(mask[:, None, None], s, -jnp.inf)
    m = jnp.max(s, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    p = jnp.exp(s - m)
    l = jnp.sum(p, axis=-1, keepdims=True)
    seen = l > 0
    l_safe = jnp.where(seen, l, 1.0)
    lse = jnp.where(seen, m + jnp.log(l_safe), NO_KEYS)[..., 0]  # [B, K, G, T]
    probs = (p / l_safe).astype(v.dtype)
    out = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(B, T, N, H).astype(q.dtype), lse.transpose(0, 3, 1, 2).reshape(B, T, N)


def merge(parts: list[tuple[jax.Array, jax.Array]]) -> tuple[jax.Array, jax.Array]:
    """Exact combination of (out [B, T, N, H], lse [B, T, N]) parts over disjoint key sets.

    Returns (out float32, lse float32). Rows that see no key in any part get out = 0.
    """
    lses = [l.astype(jnp.float32) for _, l in parts]
    m = lses[0]
    for l in lses[1:]:
        m = jnp.maximum(m, l)
    m = jnp.where(jnp.isfinite(m), m, 0.0)  # a kernel may report -inf for empty rows
    total = sum(jnp.exp(l - m) for l in lses)
    seen = total > 0
    lse = jnp.where(seen, m + jnp.log(jnp.where(seen, total, 1.0)), NO_KEYS)
    out = 0.0
    for (o, _), l in zip(parts, lses):
        w = jnp.where(seen, jnp.exp(l - lse), 0.0)
        out = out + w[..., None] * o.astype(jnp.float32)
    return out, lse
