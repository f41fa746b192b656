"""The backward Pallas kernels of flash attention: one for dq, one for dk and dv.

Both recompute the probabilities of each visited block from the forward's log-sum-exp,
p = exp(s - lse), and use D = rowsum(dout · out) - dlse (the cotangent of lse enters here: the
derivative of lse with respect to the scores is p itself), so that ds = p · (dp - D) with
dp = dout · vᵀ:

* dq kernel, grid (B, K, nq, nk), key blocks innermost: dq = scale · Σ_j ds · k, accumulated in
  float32 VMEM per query block, for the G heads of the group.
* dk/dv kernel, grid (B, K, nk, nq), query blocks innermost: with the keys on the rows
  (sᵀ = k · qᵀ, so lse and D are read as rows, as they are stored), dv = Σ pᵀ · dout and
  dk = scale · Σ dsᵀ · q, summed over the query blocks and the G query heads of the KV head.

Blocks that no query can see are skipped as in the forward (ranges of `flash_common`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from qwen3_jax.ops import flash_common as fc

NT = (((1,), (1,)), ((), ()))  # a @ b.T
NN = (((1,), (0,)), ((), ()))  # a @ b


def _clamp(j, lo, hi):
    return jnp.minimum(jnp.maximum(j, lo), jnp.maximum(hi, lo))


def _dq_kernel(lo_ref, hi_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, qpos_ref, kpos_ref, *rest, d, causal,
               scale, segmented):
    if segmented:
        qseg_ref, kseg_ref, dq_ref, acc = rest
    else:
        qseg_ref = kseg_ref = None
        dq_ref, acc = rest
    b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)

    @pl.when(j == 0)
    def _init():
        acc[...] = jnp.zeros(acc.shape, jnp.float32)

    @pl.when((j >= lo_ref[b, i]) & (j <= hi_ref[b, i]))
    def _step():
        q_pos = jnp.expand_dims(qpos_ref[0], -1)
        q_seg = jnp.expand_dims(qseg_ref[0], -1) if segmented else None
        kv_seg = kseg_ref[...] if segmented else None
        mask = fc.block_mask(q_pos, kpos_ref[...], q_seg, kv_seg, i * d.bq, j * d.bk, d.T, d.S, causal)
        k, v = k_ref[...], v_ref[...]
        for g in range(d.G):
            s = jax.lax.dot_general(q_ref[g], k, NT, preferred_element_type=jnp.float32) * scale
            lse = jnp.expand_dims(lse_ref[g][0], -1)  # [bq, 1]
            di = jnp.expand_dims(di_ref[g][0], -1)
            p = jnp.where(mask, jnp.exp(s - lse), 0.0)
            dp = jax.lax.dot_general(do_ref[g], v, NT, preferred_element_type=jnp.float32)
            ds = p * (dp - di)
            acc[g] += jax.lax.dot_general(ds.astype(k.dtype), k, NN, preferred_element_type=jnp.float32)

    @pl.when(j == d.nk - 1)
    def _finish():
        dq_ref[...] = (acc[...] * scale).astype(dq_ref.dtype)


def _dkv_kernel(lo_ref, hi_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, qpos_ref, kpos_ref, *rest, d, causal,
                scale, segmented):
    if segmented:
        qseg_ref, kseg_ref, dk_ref, dv_ref, dk_acc, dv_acc = rest
    else:
        qseg_ref = kseg_ref = None
        dk_ref, dv_ref, dk_acc, dv_acc = rest
    b, j, i = pl.program_id(0), pl.program_id(2), pl.program_id(3)

    @pl.when(i == 0)
    def _init():
        dk_acc[...] = jnp.zeros(dk_acc.shape, jnp.float32)
        dv_acc[...] = jnp.zeros(dv_acc.shape, jnp.float32)

    @pl.when((i >= lo_ref[b, j]) & (i <= hi_ref[b, j]))
    def _step():
        kv_pos = jnp.expand_dims(kpos_ref[0], -1)  # [bk, 1]
        kv_seg = jnp.expand_dims(kseg_ref[0], -1) if segmented else None
        q_seg = qseg_ref[...] if segmented else None
        mask = fc.block_mask(qpos_ref[...], kv_pos, q_seg, kv_seg, i * d.bq, j * d.bk, d.T, d.S, causal,
                             transposed=True)  # [bk, bq]
        k, v = k_ref[...], v_ref[...]
        dk, dv = dk_acc[...], dv_acc[...]
        for g in range(d.G):
            q, do = q_ref[g], do_ref[g]
            s = jax.lax.dot_general(k, q, NT, preferred_element_type=jnp.float32) * scale  # [bk, bq]
            p = jnp.where(mask, jnp.exp(s - lse_ref[g]), 0.0)
            dv += jax.lax.dot_general(p.astype(do.dtype), do, NN, preferred_element_type=jnp.float32)
            dp = jax.lax.dot_general(v, do, NT, preferred_element_type=jnp.float32)
            ds = p * (dp - di_ref[g])
            dk += jax.lax.dot_general(ds.astype(q.dtype), q, NN, preferred_element_type=jnp.float32)
        dk_acc[...] = dk
        dv_acc[...] = dv

    @pl.when(i == d.nq - 1)
    def _finish():
        dk_ref[...] = (dk_acc[...] * scale).astype(dk_ref.dtype)
        dv_ref[...] = dv_acc[...].astype(dv_ref.dtype)


def _cost(d, need_count: int, itemsize: int, matmuls: int) -> pl.CostEstimate:
    pairs = need_count * d.bq * d.bk * d.N
    moved = 2 * need_count * d.K * d.bk * d.H * itemsize + 3 * d.B * d.Tp * d.N * d.H * itemsize
    return pl.CostEstimate(flops=2 * matmuls * pairs * d.H, transcendentals=pairs, bytes_accessed=moved)


def backward(st, q, k, v, q_pos, kv_pos, q_seg, kv_seg, out, lse, d_out, d_lse):
    """(dq, dk, dv) of `flash_attention` for cotangents d_out [B, T, N, H] and d_lse [B, T, N]."""
    from qwen3_jax.ops.flash_attention import prepare

    d = st.d
    G, bq, bk, H = d.G, d.bq, d.bk, d.H
    qg, kt, vt, qp, kp, qs, ks, need = prepare(q, k, v, q_pos, kv_pos, q_seg, kv_seg, st)
    do = fc.pad_to(d_out.reshape(d.B, d.T, d.K, G, H).transpose(0, 2, 3, 1, 4), 3, d.Tp)
    di = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1) - d_lse.astype(jnp.float32)

    def rows(x):  # [B, T, N] -> [B, K, G, 1, Tp]
        x = x.reshape(d.B, d.T, d.K, G).transpose(0, 2, 3, 1)[:, :, :, None, :]
        return fc.pad_to(x, 4, d.Tp)

    lse_r, di_r = rows(lse), rows(di)
    segmented = qs is not None
    params = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))
    static_count = None if st.cost is None else st.cost.transcendentals // (bq * bk * d.N)
    itemsize = jnp.dtype(q.dtype).itemsize

    # dq: grid (B, K, i, j), key blocks clamped into the needed range of query block i.
    lo, hi = fc.block_ranges(need, 2)
    kvj = lambda b, h, i, j, lo_r, hi_r: _clamp(j, lo_r[b, i], hi_r[b, i])  # noqa: E731
    q_spec = pl.BlockSpec((None, None, G, bq, H), lambda b, h, i, j, *_: (b, h, 0, i, 0))
    kv_spec = pl.BlockSpec((None, None, bk, H), lambda b, h, i, j, *r: (b, h, kvj(b, h, i, j, *r), 0))
    row_spec = pl.BlockSpec((None, None, G, 1, bq), lambda b, h, i, j, *_: (b, h, 0, 0, i))
    qrow = pl.BlockSpec((None, 1, bq), lambda b, h, i, j, *_: (b, 0, i))
    krow = pl.BlockSpec((None, 1, bk), lambda b, h, i, j, *r: (b, 0, kvj(b, h, i, j, *r)))
    in_specs = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec, qrow, krow] + ([qrow, krow] if segmented else [])
    args = [qg, kt, vt, do, lse_r, di_r, qp, kp] + ([qs, ks] if segmented else [])
    kw = dict(d=d, causal=st.causal, scale=st.scale, segmented=segmented)
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, **kw), out_shape=jax.ShapeDtypeStruct(qg.shape, q.dtype),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=2, grid=(d.B, d.K, d.nq, d.nk), in_specs=in_specs, out_specs=q_spec,
            scratch_shapes=[pltpu.VMEM((G, bq, H), jnp.float32)]),
        compiler_params=params, interpret=st.interpret, name="qwen3_flash_dq",
        cost_estimate=None if static_count is None else _cost(d, static_count, itemsize, 3),
    )(lo, hi, *args)

    # dk, dv: grid (B, K, j, i), query blocks clamped into the needed range of key block j.
    lo, hi = fc.block_ranges(need, 1)
    qi = lambda b, h, j, i, lo_r, hi_r: _clamp(i, lo_r[b, j], hi_r[b, j])  # noqa: E731
    q_spec = pl.BlockSpec((None, None, G, bq, H), lambda b, h, j, i, *r: (b, h, 0, qi(b, h, j, i, *r), 0))
    kv_spec = pl.BlockSpec((None, None, bk, H), lambda b, h, j, i, *_: (b, h, j, 0))
    row_spec = pl.BlockSpec((None, None, G, 1, bq), lambda b, h, j, i, *r: (b, h, 0, 0, qi(b, h, j, i, *r)))
    qrow = pl.BlockSpec((None, 1, bq), lambda b, h, j, i, *r: (b, 0, qi(b, h, j, i, *r)))
    krow = pl.BlockSpec((None, 1, bk), lambda b, h, j, i, *_: (b, 0, j))
    in_specs = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec, qrow, krow] + ([qrow, krow] if segmented else [])
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, **kw),
        out_shape=[jax.ShapeDtypeStruct(kt.shape, k.dtype), jax.ShapeDtypeStruct(vt.shape, v.dtype)],
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=2, grid=(d.B, d.K, d.nk, d.nq), in_specs=in_specs, out_specs=[kv_spec, kv_spec],
            scratch_shapes=[pltpu.VMEM((bk, H), jnp.float32), pltpu.VMEM((bk, H), jnp.float32)]),
        compiler_params=params, interpret=st.interpret, name="qwen3_flash_dkv",
        cost_estimate=None if static_count is None else _cost(d, static_count, itemsize, 4),
    )(lo, hi, *args)

    dq = dq[:, :, :, :d.T].transpose(0, 3, 1, 2, 4).reshape(d.B, d.T, d.N, H)
    dk = dk[:, :, :d.S].transpose(0, 2, 1, 3)
    dv = dv[:, :, :d.S].transpose(0, 2, 1, 3)
    return dq, dk, dv
