"""Chunked (flash) attention: Pallas TPU kernels for the forward and backward passes.

    out = flash_attention(q, k, v)                       # q [B, T, N, H], k/v [B, S, K, H]
    out, lse = flash_attention(q, k, v, return_lse=True)  # lse [B, T, N] float32

The scores are never materialised: the forward kernel walks the key blocks of each query block
with an online softmax (`flash_forward`), the backward kernels recompute the probabilities from
the saved log-sum-exp (`flash_backward`; one kernel for dq, one for dk and dv). Memory grows
with T + S, not T·S.

* GQA natively: N query heads over K KV heads (N % K == 0); query head n reads KV head n // (N/K);
  the G = N/K heads of a group share each K/V block that is loaded, K/V are never repeated.
* Masking: query t sees key s when (not causal or kv_pos[s] <= q_pos[t]) and, with segment ids,
  segment_ids[t] == kv_segment_ids[s] (packed sequences). Positions default to the queries being
  the last T of the S keys (q_pos = S - T + t, kv_pos = s): the usual causal attention for T == S
  and a prefill against a cache for T < S. They may be given as a scalar offset, [B] per-row
  offsets or full [B, T] / [B, S] arrays (positions in a cache with holes, zig-zag ring chunks).
  Key blocks that no query of a query block can see are skipped (no compute, no copy).
* Any T and S with any block sizes (multiples of 8; on a real TPU, a block shorter than its
  sequence must be a multiple of 128): the tails are padded and masked. The default block grows
  with the length (`flash_common.default_block`: 128 to 512, about length / 16).
* `scale` is the logit scale of this call (default head_dim ** -0.5).
* Rows that see no key give out 0 and lse `block_attention.NO_KEYS` (-1e30); gradients flow through lse too (its cotangent
  enters the backward as it does for softmax's normaliser), as ring attention's merges need.

Platforms: on TPU the kernels compile with Mosaic; elsewhere (`interpret=None` off TPU) they run
in Pallas' interpret mode, the same kernel code executed as XLA operations: correct but slow, used
by the tests on CPU. On GPU, `attention_impl="flash"` in the model uses `jax.nn.dot_product_attention`
(cuDNN's fused attention where it applies) instead of these kernels, see `model.attention_impl`;
called directly on GPU, this function runs the kernels in interpret mode (correct, slow).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from qwen3_jax.ops import flash_common as fc
from qwen3_jax.ops.flash_forward import forward as _forward_kernel
from qwen3_jax.sharding.platform import target_platform


@dataclasses.dataclass(frozen=True)
class _Static:
    d: fc.Dims
    causal: bool
    scale: float
    interpret: object
    cost: object = None


def _interpret(interpret):
    if interpret is None:  # the platform compiled for (the context mesh's devices), not the host's
        return target_platform() != "tpu"
    return interpret


def _cost(d: fc.Dims, visited: int, itemsize: int) -> pl.CostEstimate:
    """Cost of the forward kernel visiting `visited` (batch row, query block, key block) triples."""
    pairs = visited * d.bq * d.bk * d.N
    kv_bytes = 2 * visited * d.K * d.bk * d.H * itemsize
    qo_bytes = 2 * d.B * d.Tp * d.N * d.H * itemsize
    return pl.CostEstimate(flops=4 * pairs * d.H, transcendentals=pairs, bytes_accessed=kv_bytes + qo_bytes)


def _static_visits(d: fc.Dims, q_positions, kv_positions, causal: bool, segmented: bool) -> int:
    """Number of visited block triples when it is known at trace time (default or scalar positions)."""
    full = d.B * d.nq * d.nk
    if not causal:
        return full
    if segmented or not all(p is None or isinstance(p, (int, np.integer)) for p in (q_positions, kv_positions)):
        return full
    q0 = d.S - d.T if q_positions is None else int(q_positions)
    k0 = 0 if kv_positions is None else int(kv_positions)
    q_hi = np.minimum(np.arange(d.nq) * d.bq + d.bq - 1, d.T - 1) + q0
    k_lo = np.arange(d.nk) * d.bk + k0
    return d.B * int((k_lo[None, :] <= q_hi[:, None]).sum())


def prepare(q, k, v, q_pos, kv_pos, q_seg, kv_seg, st: _Static):
    """Grouped, padded kernel inputs and the needed-block ranges."""
    d = st.d
    qg = q.reshape(d.B, d.T, d.K, d.G, d.H).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, H]
    qg = fc.pad_to(qg, 3, d.Tp)
    kt = fc.pad_to(k.transpose(0, 2, 1, 3), 2, d.Sp)  # [B, K, Sp, H]
    vt = fc.pad_to(v.transpose(0, 2, 1, 3), 2, d.Sp)
    need = fc.needed_blocks(d, q_pos, kv_pos, q_seg, kv_seg, st.causal)

    def row(x, L):
        return None if x is None else fc.pad_to(x, 1, L)[:, None, :]

    return qg, kt, vt, row(q_pos, d.Tp), row(kv_pos, d.Sp), row(q_seg, d.Tp), row(kv_seg, d.Sp), need


def _flash_fwd_impl(st: _Static, q, k, v, q_pos, kv_pos, q_seg, kv_seg):
    d = st.d
    qg, kt, vt, qp, kp, qs, ks, need = prepare(q, k, v, q_pos, kv_pos, q_seg, kv_seg, st)
    lo, hi = fc.block_ranges(need, 2)
    out, lse = _forward_kernel(qg, kt, vt, qp, kp, qs, ks, lo, hi, d=d, causal=st.causal, scale=st.scale,
                               interpret=st.interpret, cost=st.cost)
    out = out[:, :, :, :d.T].transpose(0, 3, 1, 2, 4).reshape(d.B, d.T, d.N, d.H)
    lse = lse[:, :, :, 0, :d.T].transpose(0, 3, 1, 2).reshape(d.B, d.T, d.N)
    return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(st: _Static, q, k, v, q_pos, kv_pos, q_seg, kv_seg):
    return _flash_fwd_impl(st, q, k, v, q_pos, kv_pos, q_seg, kv_seg)


def _flash_fwd(st, q, k, v, q_pos, kv_pos, q_seg, kv_seg):
    out, lse = _flash_fwd_impl(st, q, k, v, q_pos, kv_pos, q_seg, kv_seg)
    return (out, lse), (q, k, v, q_pos, kv_pos, q_seg, kv_seg, out, lse)


def _flash_bwd(st, res, cts):
    from qwen3_jax.ops.flash_backward import backward

    q, k, v, q_pos, kv_pos, q_seg, kv_seg, out, lse = res
    d_out, d_lse = cts
    dq, dk, dv = backward(st, q, k, v, q_pos, kv_pos, q_seg, kv_seg, out, lse, d_out, d_lse)
    return dq, dk, dv, None, None, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(q, k, v, *, segment_ids=None, kv_segment_ids=None, q_positions=None, kv_positions=None,
                    causal: bool = True, scale: float | None = None, block_q: int | None = None, block_k: int | None = None,
                    return_lse: bool = False, interpret=None):
    """Attention without the T×S score matrix (see the module docstring for the semantics).

    Args:
      q: [B, T, N, H] queries; k, v: [B, S, K, H] keys and values (N a multiple of K).
      segment_ids: optional [B, T] int packing ids of the queries; kv_segment_ids: [B, S] those of
        the keys (default: segment_ids, when S == T). A key whose id matches no query id (say -1)
        is invisible: that is how padding is masked.
      q_positions: None (S - T + arange(T)), a scalar offset, [B] offsets or [B, T] positions.
      kv_positions: None (arange(S)), a scalar offset, [B] offsets or [B, S] positions.
      causal: mask keys at later positions than the query.
      scale: logit scale (default head_dim ** -0.5).
      block_q, block_k: block sizes (multiples of 8; 128 on a real TPU unless the whole sequence).
        None (default): `flash_common.default_block` of T and of S, about a sixteenth of the
        length in [128, 512], so that causal attention computes within ~1.06x of its exact pairs
        at 4,096 and beyond (blocks of 512 would give 1.125x at 4,096).
      return_lse: also return the log-sum-exp of each row's scaled logits, [B, T, N] float32.
      interpret: run the Pallas kernels in interpret mode (None: whenever the default backend is not TPU;
        pass False to compile for a TPU from another host, `qwen3_jax.aot`).

    Returns:
      out [B, T, N, H] in q's dtype, and lse when `return_lse`.
    """
    d = fc.make_dims(q.shape, k.shape, v.shape, block_q, block_k)
    scale = d.H ** -0.5 if scale is None else float(scale)
    q_pos = fc.positions(q_positions, d.B, d.T, d.S - d.T, "q_positions")
    kv_pos = fc.positions(kv_positions, d.B, d.S, 0, "kv_positions")
    q_seg, kv_seg = fc.segments(segment_ids, kv_segment_ids, d.B, d.T, d.S)
    visits = _static_visits(d, q_positions, kv_positions, causal, q_seg is not None)
    st = _Static(d, bool(causal), scale, _interpret(interpret), _cost(d, visits, jnp.dtype(q.dtype).itemsize))
    out, lse = _flash(st, q, k, v, q_pos, kv_pos, q_seg, kv_seg)
    return (out, lse) if return_lse else out
