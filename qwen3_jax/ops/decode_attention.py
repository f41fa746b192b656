"""Decode attention: one query position per row against a long KV cache, as a Pallas kernel.

    out = decode_attention(q, cache_k, cache_v, kv_valid)   # q [B, 1, N, H] -> [B, 1, N, H]

The cache is read where it lies, in the project's layout (keys [B, K, S, H], values [B, K, H, S];
see `model.attention.update_cache`). The key slots are split into blocks of at most `block_k`
(`_block_size`: a multiple of 128 or all of S on TPU, as Mosaic requires); grid
(B, K, nk) with every step independent ("parallel": the blocks of one row can run on different
cores), each step attending the G = N / K query heads of KV head k to one block and writing that
block's normalised output and log-sum-exp. The parts are then merged exactly by log-sum-exp
(o = Σ_j exp(lse_j - lse) o_j). Blocks holding no valid slot are skipped and not fetched (the
index map clamps into the row's range of valid blocks).

`extra_kv` adds keys and values that are not in the cache (the decode step's own key and value,
which the model writes only after the attention read the cache): they enter the same merge.

On TPU the kernel compiles with Mosaic; elsewhere it runs in interpret mode (`interpret=None`).
Its plain-XLA equivalent is `ops.attention.dot_product_attention(..., kv_layout="cache")`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from qwen3_jax.ops.block_attention import NO_KEYS
from qwen3_jax.sharding.platform import target_platform

NT = (((1,), (1,)), ((), ()))  # a @ b.T
_LANES = 128


def _kernel(lo_ref, hi_ref, q_ref, k_ref, v_ref, valid_ref, o_ref, lse_ref, *, scale: float, ragged: bool):
    b, j = pl.program_id(0), pl.program_id(2)
    run = (j >= lo_ref[b]) & (j <= hi_ref[b])
    rows = o_ref.shape[0]

    @pl.when(run)
    def _step():
        mask = valid_ref[...] != 0  # [1, bk]
        v = v_ref[...]  # [H, bk]
        if ragged:
            v = jnp.where(mask, v, jnp.zeros_like(v))
        s = jax.lax.dot_general(q_ref[...], k_ref[...], NT, preferred_element_type=jnp.float32) * scale  # [G, bk]
        m = jnp.max(jnp.where(mask, s, -jnp.inf), axis=-1, keepdims=True)
        m = jnp.where(m == -jnp.inf, 0.0, m)
        p = jnp.where(mask, jnp.exp(s - m), 0.0)
        l = jnp.sum(p, axis=-1, keepdims=True)
        seen = l > 0
        l_safe = jnp.where(seen, l, 1.0)
        o = jax.lax.dot_general(p.astype(v.dtype), v, NT, preferred_element_type=jnp.float32)  # [G, H]
        o_ref[...] = jnp.where(seen, o / l_safe, 0.0).astype(o_ref.dtype)
        lse_ref[...] = jnp.broadcast_to(jnp.where(seen, m + jnp.log(l_safe), NO_KEYS), (rows, _LANES))

    @pl.when(jnp.logical_not(run))
    def _skip():
        o_ref[...] = jnp.zeros(o_ref.shape, o_ref.dtype)
        lse_ref[...] = jnp.full(lse_ref.shape, NO_KEYS, jnp.float32)


def _block_size(S: int, block_k: int, tpu: bool) -> int:
    """The key block for a cache of S slots.

    All of S when S <= block_k; else the largest multiple of 128 <= block_k that divides S (the
    cache is never padded, which would copy it); else, off TPU only, the largest multiple of 8
    <= block_k dividing S. Otherwise block_k rounded down to a multiple of 128 (of 8 off TPU), and
    the last block runs past S (`decode_attention` masks it). On TPU, Mosaic accepts a block that
    is a multiple of 128 or the whole length, so the result is always one of these there.
    """
    if not isinstance(block_k, int) or block_k <= 0 or block_k % 8:
        raise ValueError(f"block_k must be a positive multiple of 8, got {block_k!r}")
    if S <= block_k:
        return S
    if tpu and block_k < _LANES:
        raise ValueError(f"block_k={block_k} is shorter than the cache (S={S}) and not a multiple of 128, "
                         f"which a TPU block must be; use block_k >= 128")
    steps = (_LANES,) if tpu else (_LANES, 8)
    for step in steps:
        for bk in range(block_k - block_k % step, 0, -step):
            if S % bk == 0:
                return bk
    return block_k - block_k % steps[-1]


def decode_attention(q, k_cache, v_cache, kv_valid, *, scale: float | None = None, block_k: int = 512,
                     extra_kv=None, return_lse: bool = False, interpret=None):
    """Attention of one query per row over a KV cache (see the module docstring).

    Args:
      q: [B, 1, N, H] queries.
      k_cache: [B, K, S, H] keys; v_cache: [B, K, H, S] values (N a multiple of K).
      kv_valid: [B, S] bool, the slots this query sees (its causal prefix, padding excluded).
      scale: logit scale (default H ** -0.5).
      block_k: largest key block (a multiple of 8; on a real TPU at least 128 unless it is >= S);
        the block used is picked by `_block_size` (on TPU a multiple of 128 or all of S).
      extra_kv: optional (k [B, 1, K, H], v [B, 1, K, H], valid [B] bool): one more key and value
        per row outside the cache.
      return_lse: also return the log-sum-exp [B, 1, N] float32 (rows that see nothing: NO_KEYS).
      interpret: Pallas interpret mode (None: when the default backend is not TPU).

    Returns:
      out [B, 1, N, H] in q's dtype (and lse).
    """
    B, T, N, H = q.shape
    if T != 1:
        raise ValueError(f"decode_attention takes one query per row, got q {tuple(q.shape)}")
    Bk, K, S, Hk = k_cache.shape
    if (Bk, Hk) != (B, H) or v_cache.shape != (B, K, H, S):
        raise ValueError(f"cache shapes k {tuple(k_cache.shape)}, v {tuple(v_cache.shape)} do not fit q "
                         f"{tuple(q.shape)} (want k [B, K, S, H], v [B, K, H, S])")
    if N % K:
        raise ValueError(f"query heads N={N} must be a multiple of KV heads K={K}")
    if kv_valid.shape != (B, S):
        raise ValueError(f"kv_valid must be [B, S]=[{B}, {S}], got {tuple(kv_valid.shape)}")
    G = N // K
    Gp = -(-G // 8) * 8  # query rows padded to a sublane tile
    scale = H ** -0.5 if scale is None else float(scale)
    interpret = target_platform() != "tpu" if interpret is None else interpret  # platform compiled for
    bk = _block_size(S, block_k, tpu=not interpret)
    nk = -(-S // bk)

    # A last block past S reads unspecified keys and values there: the mask (padded with False)
    # hides them, and the kernel zeroes those values (0 · NaN would still be NaN).
    valid = jnp.pad(kv_valid.astype(bool), ((0, 0), (0, nk * bk - S)))
    blocks = jnp.any(valid.reshape(B, nk, bk), axis=-1)  # [B, nk]
    idx = jnp.arange(nk, dtype=jnp.int32)
    hi = jnp.max(jnp.where(blocks, idx, -1), axis=-1).astype(jnp.int32)
    lo = jnp.min(jnp.where(blocks, idx, nk), axis=-1).astype(jnp.int32)
    lo, hi = jnp.where(hi < 0, 0, lo), hi

    def block(b, h, j, lo_r, hi_r):
        return jnp.minimum(jnp.maximum(j, lo_r[b]), jnp.maximum(hi_r[b], lo_r[b]))

    qg = jnp.pad(q.reshape(B, K, G, H), ((0, 0), (0, 0), (0, Gp - G), (0, 0)))
    in_specs = [pl.BlockSpec((None, None, Gp, H), lambda b, h, j, *_: (b, h, 0, 0)),
                pl.BlockSpec((None, None, bk, H), lambda b, h, j, *r: (b, h, block(b, h, j, *r), 0)),
                pl.BlockSpec((None, None, H, bk), lambda b, h, j, *r: (b, h, 0, block(b, h, j, *r))),
                pl.BlockSpec((None, 1, bk), lambda b, h, j, *r: (b, 0, block(b, h, j, *r)))]
    out_specs = [pl.BlockSpec((None, None, None, Gp, H), lambda b, h, j, *_: (b, h, j, 0, 0)),
                 pl.BlockSpec((None, None, None, Gp, _LANES), lambda b, h, j, *_: (b, h, j, 0, 0))]
    itemsize = jnp.dtype(k_cache.dtype).itemsize
    cost = pl.CostEstimate(flops=4 * B * N * S * H, transcendentals=B * N * S,
                           bytes_accessed=2 * B * K * S * H * itemsize)
    o_parts, lse_parts = pl.pallas_call(
        functools.partial(_kernel, scale=scale, ragged=nk * bk != S),
        out_shape=[jax.ShapeDtypeStruct((B, K, nk, Gp, H), jnp.float32),
                   jax.ShapeDtypeStruct((B, K, nk, Gp, _LANES), jnp.float32)],
        grid_spec=pltpu.PrefetchScalarGridSpec(num_scalar_prefetch=2, grid=(B, K, nk), in_specs=in_specs,
                                               out_specs=out_specs),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel")),
        interpret=interpret, cost_estimate=cost, name="qwen3_decode_attention",
    )(lo, hi, qg, k_cache, v_cache, valid.astype(jnp.int32)[:, None, :])
    o_parts, lse_parts = o_parts[:, :, :, :G], lse_parts[:, :, :, :G, 0]  # [B, K, nk, G, H], [B, K, nk, G]

    if extra_kv is not None:
        k_new, v_new, valid_new = extra_kv
        s_new = jnp.einsum("bkgh,bkh->bkg", q.reshape(B, K, G, H), k_new.reshape(B, K, H),
                           preferred_element_type=jnp.float32) * scale
        lse_new = jnp.where(valid_new.reshape(B, 1, 1), s_new, NO_KEYS)
        o_new = jnp.broadcast_to(v_new.reshape(B, K, 1, H).astype(jnp.float32), (B, K, G, H))
        o_parts = jnp.concatenate([o_parts, o_new[:, :, None]], axis=2)
        lse_parts = jnp.concatenate([lse_parts, lse_new[:, :, None]], axis=2)

    m = jnp.max(lse_parts, axis=2, keepdims=True)
    w = jnp.exp(lse_parts - m)  # [B, K, parts, G]
    total = jnp.sum(w, axis=2)
    out = jnp.sum(w[..., None] * o_parts, axis=2) / total[..., None]  # [B, K, G, H]
    lse = m[:, :, 0] + jnp.log(total)
    seen = lse > NO_KEYS / 2
    out = jnp.where(seen[..., None], out, 0.0).reshape(B, 1, N, H).astype(q.dtype)
    if return_lse:
        return out, jnp.where(seen, lse, NO_KEYS).reshape(B, 1, N)
    return out
