"""Block logic shared by the flash attention kernels: shapes, padding, masks, skipped blocks.

The kernels see queries as [B, K, G, T, H] (the N = K·G query heads grouped on their KV head, so
one K/V block serves all G heads of its group and K/V are never repeated) and keys/values as
[B, K, S, H]. Lengths are padded up to whole blocks; the padded rows and columns are masked by
their index, so any length works with any block size.

Which (query block, key block) pairs can hold a visible pair is decided before the kernels run,
from each block's range of positions and segment ids: with causal masking, key block j is needed
by query block i only when its smallest key position is at most the largest query position of i;
with segments, only when the blocks' id ranges overlap. For each query block the needed key blocks
form the range [lo, hi] (for each key block the needed query blocks likewise); the kernels skip
the steps outside it, and their index maps clamp the block index into it, so a skipped step
fetches no new data either. The mask inside a block is always applied, so the skipping only saves
work and never decides a value.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

INT_MAX = jnp.iinfo(jnp.int32).max
INT_MIN = jnp.iinfo(jnp.int32).min


def round_up(x: int, m: int) -> int:
    return -(-x // m) * m


@dataclasses.dataclass(frozen=True)
class Dims:
    """Static sizes of one attention call.

    Attributes:
      B, T, S, N, K, H: batch, query length, key length, query heads, KV heads, head dim.
      bq, bk: query and key block sizes; Tp, Sp: lengths padded to whole blocks.
    """

    B: int
    T: int
    S: int
    N: int
    K: int
    H: int
    bq: int
    bk: int

    @property
    def G(self) -> int:
        return self.N // self.K

    @property
    def Tp(self) -> int:
        return round_up(self.T, self.bq)

    @property
    def Sp(self) -> int:
        return round_up(self.S, self.bk)

    @property
    def nq(self) -> int:
        return self.Tp // self.bq

    @property
    def nk(self) -> int:
        return self.Sp // self.bk


MIN_BLOCK, MAX_BLOCK = 128, 512


def default_block(length: int) -> int:
    """The default block size along a sequence of `length`: about length / 16, a power of two in [128, 512].

    With causal masking a square block schedule visits about (1 + b / T) times the exact causal
    pairs (the blocks straddling the diagonal are computed whole), so b <= T / 16 keeps the
    overhead near 6% (4,096 -> 256, 1.06x; 32,768 -> 512, 1.02x), while blocks of at least 128
    keep the TPU's tiles full and the grid short. Lengths of at most 128 take one block (the
    whole sequence), which Mosaic accepts whatever the length.
    """
    if length <= MIN_BLOCK:
        return round_up(max(length, 1), 8)
    b = MIN_BLOCK
    while b * 2 <= min(MAX_BLOCK, length // 16):
        b *= 2
    return b


def _block(size: int | None, length: int, name: str) -> int:
    if size is None:
        size = default_block(length)
    if not isinstance(size, int) or size <= 0 or size % 8:
        raise ValueError(f"{name} must be a positive multiple of 8, got {size!r}")
    return size if length > size else round_up(length, 8)


def make_dims(q_shape, k_shape, v_shape, block_q: int | None, block_k: int | None) -> Dims:
    """Checks the shapes (q [B, T, N, H], k/v [B, S, K, H]) and picks the block sizes (None: `default_block`)."""
    if len(q_shape) != 4 or len(k_shape) != 4:
        raise ValueError(f"q must be [B, T, N, H] and k, v [B, S, K, H]; got q {tuple(q_shape)}, k {tuple(k_shape)}")
    if tuple(k_shape) != tuple(v_shape):
        raise ValueError(f"k and v must have the same shape; got {tuple(k_shape)} and {tuple(v_shape)}")
    B, T, N, H = q_shape
    Bk, S, K, Hk = k_shape
    if Bk != B or Hk != H:
        raise ValueError(f"q {tuple(q_shape)} and k {tuple(k_shape)} disagree on batch or head_dim")
    if N % K:
        raise ValueError(f"query heads N={N} must be a multiple of KV heads K={K}")
    return Dims(B, T, S, N, K, H, _block(block_q, T, "block_q"), _block(block_k, S, "block_k"))


def positions(pos, B: int, L: int, default_offset: int, name: str) -> jax.Array:
    """Positions as int32 [B, L] from None (default_offset + arange), a scalar or [B] offset, or [B, L]."""
    steps = jnp.arange(L, dtype=jnp.int32)
    if pos is None:
        return jnp.broadcast_to(default_offset + steps, (B, L))
    pos = jnp.asarray(pos)
    if not jnp.issubdtype(pos.dtype, jnp.integer):
        raise ValueError(f"{name} must be integers, got dtype {pos.dtype}")
    pos = pos.astype(jnp.int32)
    if pos.ndim == 0:
        return jnp.broadcast_to(pos + steps, (B, L))
    if pos.shape == (B,):
        return pos[:, None] + steps[None, :]
    if pos.shape == (B, L):
        return pos
    raise ValueError(f"{name} must be a scalar offset, [B]={B} offsets or [B, L]=[{B}, {L}]; got {tuple(pos.shape)}")


def segments(segment_ids, kv_segment_ids, B: int, T: int, S: int):
    """(q ids [B, T], kv ids [B, S]) int32, or (None, None) without segments."""
    if segment_ids is None and kv_segment_ids is None:
        return None, None
    if segment_ids is None:
        raise ValueError("kv_segment_ids needs segment_ids (the query side) too")
    q = jnp.asarray(segment_ids).astype(jnp.int32)
    if q.shape != (B, T):
        raise ValueError(f"segment_ids must be [B, T]=[{B}, {T}], got {tuple(q.shape)}")
    if kv_segment_ids is None:
        if S != T:
            raise ValueError(f"kv_segment_ids is required when the key length S={S} differs from T={T}")
        return q, q
    kv = jnp.asarray(kv_segment_ids).astype(jnp.int32)
    if kv.shape != (B, S):
        raise ValueError(f"kv_segment_ids must be [B, S]=[{B}, {S}], got {tuple(kv.shape)}")
    return q, kv


def pad_to(x: jax.Array, axis: int, length: int, value=0) -> jax.Array:
    """x padded with `value` along `axis` up to `length`."""
    extra = length - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def _block_range(x: jax.Array, length: int, block: int, padded: int):
    """Per block of `block` entries along axis 1 of x [B, length]: (min, max) over real entries."""
    B = x.shape[0]
    lo = pad_to(x, 1, padded, INT_MAX).reshape(B, padded // block, block).min(-1)
    hi = pad_to(x, 1, padded, INT_MIN).reshape(B, padded // block, block).max(-1)
    return lo, hi


def needed_blocks(d: Dims, q_pos, kv_pos, q_seg, kv_seg, causal: bool) -> jax.Array:
    """[B, nq, nk] bool: whether key block j may hold a key that query block i sees."""
    need = jnp.ones((d.B, d.nq, d.nk), bool)
    if causal:
        _, q_hi = _block_range(q_pos, d.T, d.bq, d.Tp)
        k_lo, _ = _block_range(kv_pos, d.S, d.bk, d.Sp)
        need &= k_lo[:, None, :] <= q_hi[:, :, None]
    if q_seg is not None:
        qs_lo, qs_hi = _block_range(q_seg, d.T, d.bq, d.Tp)
        ks_lo, ks_hi = _block_range(kv_seg, d.S, d.bk, d.Sp)
        need &= (ks_lo[:, None, :] <= qs_hi[:, :, None]) & (qs_lo[:, :, None] <= ks_hi[:, None, :])
    return need


def block_ranges(need: jax.Array, axis: int):
    """First and last needed index along `axis` of `need` (int32, the other axes kept).

    Where nothing is needed both are 0 and lo > hi is avoided; the caller's `run` test then finds
    the step outside the (empty) range through `any`.
    """
    n = need.shape[axis]
    idx = jax.lax.broadcasted_iota(jnp.int32, need.shape, axis)
    lo = jnp.min(jnp.where(need, idx, n), axis=axis)
    hi = jnp.max(jnp.where(need, idx, -1), axis=axis)
    empty = hi < 0
    return jnp.where(empty, 0, lo).astype(jnp.int32), jnp.where(empty, -1, hi).astype(jnp.int32)


def block_mask(q_pos, kv_pos, q_seg, kv_seg, q_start, k_start, T: int, S: int, causal: bool,
               transposed: bool = False):
    """The bool mask of one block pair inside a kernel: [bq, bk], or [bk, bq] when `transposed`.

    Not transposed: q_pos, q_seg are [bq, 1] columns and kv_pos, kv_seg [1, bk] rows; transposed
    (the dk/dv kernel, keys on the rows): kv_* are [bk, 1] columns and q_* [1, bq] rows.
    q_start, k_start: the blocks' first padded indices (padded rows/columns, index >= T or S, are
    masked).
    """
    shape = (kv_pos.shape[0], q_pos.shape[1]) if transposed else (q_pos.shape[0], kv_pos.shape[1])
    q_axis, k_axis = (1, 0) if transposed else (0, 1)
    row = q_start + jax.lax.broadcasted_iota(jnp.int32, shape, q_axis)
    col = k_start + jax.lax.broadcasted_iota(jnp.int32, shape, k_axis)
    mask = (row < T) & (col < S)
    if causal:
        mask &= kv_pos <= q_pos
    if q_seg is not None:
        mask &= q_seg == kv_seg
    return mask
