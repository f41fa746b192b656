"""The forward Pallas kernel of flash attention: online softmax over key blocks.

Grid (B, K, nq, nk), the key blocks innermost and sequential. One step holds the G query heads of
KV head k for query block i ([G, bq, H]) and key/value block j ([bk, H]); it updates, per head,
the running row maximum m, the running sum l of exp(s - m) and the unnormalised output
acc = Σ exp(s - m)·v, all in float32 VMEM scratch. The last step writes out = acc / l and the
log-sum-exp m + log l. Steps outside the needed range of key blocks (see `flash_common`) do
nothing.

Rows that see no key at all give out = 0 and lse = `NO_KEYS` (-1e30, finite so merges stay finite).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from qwen3_jax.ops.block_attention import NO_KEYS
from qwen3_jax.ops.flash_common import Dims, block_mask

NT = (((1,), (1,)), ((), ()))  # contract the minor dims of both: a @ b.T
_LANES = 128


def _fwd_kernel(lo_ref, hi_ref, q_ref, k_ref, v_ref, qpos_ref, kpos_ref, *rest, d: Dims, causal: bool,
                scale: float, segmented: bool):
    if segmented:
        qseg_ref, kseg_ref, o_ref, lse_ref, m_sc, l_sc, acc_sc = rest
    else:
        qseg_ref = kseg_ref = None
        o_ref, lse_ref, m_sc, l_sc, acc_sc = rest
    b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
    lo, hi = lo_ref[b, i], hi_ref[b, i]

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, -jnp.inf, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    @pl.when((j >= lo) & (j <= hi))
    def _step():
        q_pos = jnp.expand_dims(qpos_ref[0], -1)  # [bq, 1]
        kv_pos = kpos_ref[...]  # [1, bk]
        q_seg = jnp.expand_dims(qseg_ref[0], -1) if segmented else None
        kv_seg = kseg_ref[...] if segmented else None
        mask = block_mask(q_pos, kv_pos, q_seg, kv_seg, i * d.bq, j * d.bk, d.T, d.S, causal)
        k = k_ref[...]
        v = v_ref[...]
        for g in range(d.G):
            s = jax.lax.dot_general(q_ref[g], k, NT, preferred_element_type=jnp.float32) * scale  # [bq, bk]
            m_prev = m_sc[g][:, :1]
            m_new = jnp.maximum(m_prev, jnp.max(jnp.where(mask, s, -jnp.inf), axis=-1, keepdims=True))
            m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)
            p = jnp.where(mask, jnp.exp(s - m_safe), 0.0)
            alpha = jnp.exp(m_prev - m_safe)
            l_new = alpha * l_sc[g][:, :1] + jnp.sum(p, axis=-1, keepdims=True)
            pv = jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
            acc_sc[g] = alpha * acc_sc[g] + pv
            m_sc[g] = jnp.broadcast_to(m_new, (d.bq, _LANES))
            l_sc[g] = jnp.broadcast_to(l_new, (d.bq, _LANES))

    @pl.when(j == d.nk - 1)
    def _finish():
        for g in range(d.G):
            l = l_sc[g][:, :1]
            seen = l > 0
            o_ref[g] = jnp.where(seen, acc_sc[g] / jnp.where(seen, l, 1.0), 0.0).astype(o_ref.dtype)
            lse = jnp.where(seen, m_sc[g][:, :1] + jnp.log(jnp.where(seen, l, 1.0)), NO_KEYS)  # [bq, 1]
            lse_ref[g] = jnp.transpose(jnp.broadcast_to(lse, (d.bq, _LANES)))[:1, :]


def forward(q, k, v, q_pos, kv_pos, q_seg, kv_seg, lo, hi, *, d: Dims, causal: bool, scale: float,
            interpret, cost=None):
    """Runs the forward kernel on padded, grouped inputs.

    Args:
      q: [B, K, G, Tp, H]; k, v: [B, K, Sp, H]; q_pos, q_seg: [B, 1, Tp]; kv_pos, kv_seg: [B, 1, Sp]
        int32 (segments None when unused); lo, hi: [B, nq] needed key-block range per query block.

    Returns:
      out [B, K, G, Tp, H] in q's dtype and lse [B, K, G, 1, Tp] float32.
    """
    segmented = q_seg is not None
    G, bq, bk, H = d.G, d.bq, d.bk, d.H

    def kv_block(b, h, i, j, lo_ref, hi_ref):
        lo_, hi_ = lo_ref[b, i], hi_ref[b, i]
        return jnp.minimum(jnp.maximum(j, lo_), jnp.maximum(hi_, lo_))

    q_spec = pl.BlockSpec((None, None, G, bq, H), lambda b, h, i, j, *_: (b, h, 0, i, 0))
    kv_spec = pl.BlockSpec((None, None, bk, H), lambda b, h, i, j, *r: (b, h, kv_block(b, h, i, j, *r), 0))
    qrow_spec = pl.BlockSpec((None, 1, bq), lambda b, h, i, j, *_: (b, 0, i))
    krow_spec = pl.BlockSpec((None, 1, bk), lambda b, h, i, j, *r: (b, 0, kv_block(b, h, i, j, *r)))
    in_specs = [q_spec, kv_spec, kv_spec, qrow_spec, krow_spec]
    args = [q, k, v, q_pos, kv_pos]
    if segmented:
        in_specs += [qrow_spec, krow_spec]
        args += [q_seg, kv_seg]
    out_specs = [q_spec, pl.BlockSpec((None, None, G, 1, bq), lambda b, h, i, j, *_: (b, h, 0, 0, i))]
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((d.B, d.K, G, 1, d.Tp), jnp.float32)]
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=2, grid=(d.B, d.K, d.nq, d.nk), in_specs=in_specs, out_specs=out_specs,
        scratch_shapes=[pltpu.VMEM((G, bq, _LANES), jnp.float32), pltpu.VMEM((G, bq, _LANES), jnp.float32),
                        pltpu.VMEM((G, bq, H), jnp.float32)])
    kernel = functools.partial(_fwd_kernel, d=d, causal=causal, scale=scale, segmented=segmented)
    return pl.pallas_call(
        kernel, out_shape=out_shape, grid_spec=grid_spec, interpret=interpret, cost_estimate=cost,
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
        name="qwen3_flash_fwd",
    )(lo, hi, *args)
