"""Ring attention over the mesh's `sequence` axis (Liu et al. 2023, arXiv 2310.01889).

The sequence is split over the n devices of the `sequence` axis. Each device keeps its block of
queries and passes its block of keys and values (with their segment ids) around the ring with
`jax.lax.ppermute`: after step s, device i holds the keys of device (i - s) mod n. Each step attends
the local queries to the visiting block with a per-block attention function that also returns the
log-sum-exp (`ops.block_attention`; the project's flash kernel fits the same slot), and the parts
are merged exactly by log-sum-exp. Memory per device is linear in the local length: a device never
holds more than its own block and one visiting block.

Causal masking follows the token's index in the original sequence, known from the layout:

* "contiguous": device i holds tokens [i·t, (i+1)·t). Blocks from earlier devices are fully
  visible, later ones are skipped, so device n-1 does n times the work of device 0.
* "zigzag": the sequence is cut into 2n chunks and device i holds chunks i and 2n-1-i (load
  balancing as in Brandon et al. 2023, "Striped Attention", arXiv 2311.09431, and the zig-zag of
  the ring-flash-attention project). Every off-diagonal step is then exactly half a block for every
  device: a block from an earlier device is seen by all local queries but only through its first
  chunk; a block from a later device is seen by the second local chunk only, through both of its
  chunks. Permute the batch once with `to_zigzag` (ids, positions, segment ids, labels) and undo
  it on the outputs with `from_zigzag`.

Segment ids (packed sequences) restrict attention to keys of the same id, in both layouts.

The backward pass is written out (`jax.custom_vjp`) as a second ring: the keys and values travel
again, with their gradient accumulators dK and dV travelling alongside, so after n steps each
device holds the gradients of its own keys and values. Each step's gradient is the vjp of the
same per-block function with the cotangents that the log-sum-exp merge gives it, so the residuals
are only the local q, k, v, output and lse. Autodiff through the forward loop would instead keep
every visiting block.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from qwen3_jax.ops.block_attention import NO_KEYS, BlockFn, default_block_fn, merge
from qwen3_jax.sharding.rules import batch_axes, mesh_axis_sizes

LAYOUTS = ("contiguous", "zigzag")

# Work done at one ring step, by the relation of the visiting block j to the local block i.
_FULL, _DIAG, _SKIP, _KV_FIRST, _Q_SECOND = range(5)


# ------------------------------------------------------------------------------------ zig-zag order
def zigzag_order(length: int, n: int) -> np.ndarray:
    """Original index of each slot of the zig-zag layout over n devices ([length] int array)."""
    if length % (2 * n):
        raise ValueError(f"sequence length {length} is not divisible by 2 x sequence axis = {2 * n} "
                         "(zig-zag needs two equal chunks per device)")
    c = length // (2 * n)
    chunks = [j for i in range(n) for j in (i, 2 * n - 1 - i)]
    return np.concatenate([np.arange(j * c, (j + 1) * c) for j in chunks])


def to_zigzag(x, n: int, axis: int = 1):
    """x with its sequence axis reordered into the zig-zag layout (apply once to ids, positions,
    segment ids and labels)."""
    return jnp.take(x, zigzag_order(x.shape[axis], n), axis=axis)


def from_zigzag(x, n: int, axis: int = 1):
    """Undoes `to_zigzag` (e.g. on logits)."""
    return jnp.take(x, np.argsort(zigzag_order(x.shape[axis], n)), axis=axis)


def local_indices(device, t: int, n: int, layout: str) -> jax.Array:
    """Original indices [t] of the tokens that `device` (traced or int) holds."""
    if layout == "zigzag":
        c = t // 2
        r = jnp.arange(c, dtype=jnp.int32)
        return jnp.concatenate([device * c + r, (2 * n - 1 - device) * c + r])
    return device * t + jnp.arange(t, dtype=jnp.int32)


# ------------------------------------------------------------------------------------ one ring step
def _case(i, j, causal: bool, layout: str):
    """Which part of the (local queries, visiting block j) attention device i computes."""
    if not causal:
        return jnp.int32(_FULL)
    earlier = _FULL if layout == "contiguous" else _KV_FIRST
    later = _SKIP if layout == "contiguous" else _Q_SECOND
    return jnp.where(j == i, _DIAG, jnp.where(j < i, earlier, later)).astype(jnp.int32)


def _part(case: int, q, k, v, seg, kv_seg, idx, block_fn: BlockFn, scale: float):
    """(out, lse) of the local queries against one visiting block, for a static `case`."""
    B, t = q.shape[:2]
    h = t // 2
    kw = dict(scale=scale)
    if case == _SKIP:
        return jnp.zeros(q.shape, q.dtype), jnp.full(q.shape[:3], NO_KEYS, jnp.float32)
    if case == _FULL:
        return block_fn(q, k, v, segment_ids=seg, kv_segment_ids=kv_seg, causal=False, **kw)
    if case == _DIAG:
        pos = jnp.broadcast_to(idx, (B, t))
        return block_fn(q, k, v, segment_ids=seg, kv_segment_ids=kv_seg, q_positions=pos, kv_positions=pos,
                        causal=True, **kw)
    if case == _KV_FIRST:  # zig-zag, earlier device: its first chunk, seen by every local query
        kv_seg = None if kv_seg is None else kv_seg[:, :h]
        return block_fn(q, k[:, :h], v[:, :h], segment_ids=seg, kv_segment_ids=kv_seg, causal=False, **kw)
    # _Q_SECOND: zig-zag, later device: both of its chunks, seen by the second local chunk only
    o2, l2 = block_fn(q[:, h:], k, v, segment_ids=None if seg is None else seg[:, h:], kv_segment_ids=kv_seg,
                      causal=False, **kw)
    o = jnp.concatenate([jnp.zeros_like(o2), o2], axis=1)
    lse = jnp.concatenate([jnp.full(l2.shape, NO_KEYS, jnp.float32), l2.astype(jnp.float32)], axis=1)
    return o, lse


def _part_grads(case: int, q, k, v, seg, kv_seg, idx, out, lse, dout, block_fn, scale):
    """(dq, dk, dv) of the final output through one step's part.

    With the final o = Σ_i exp(l_i - l)·o_i, the part's cotangents are
    do_i = w_i·do and dl_i = w_i·(<do, o_i> - <do, o>), w_i = exp(l_i - l).
    """
    if case == _SKIP:
        return (jnp.zeros(q.shape, jnp.float32), jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))

    def f(q_, k_, v_):
        return _part(case, q_, k_, v_, seg, kv_seg, idx, block_fn, scale)

    (o_i, l_i), vjp = jax.vjp(f, q, k, v)
    w = jnp.where(l_i.astype(jnp.float32) > NO_KEYS / 2, jnp.exp(l_i.astype(jnp.float32) - lse), 0.0)
    o_i32 = o_i.astype(jnp.float32)
    d_o = (w[..., None] * dout).astype(o_i.dtype)
    d_l = (w * (jnp.sum(dout * o_i32, -1) - jnp.sum(dout * out, -1))).astype(l_i.dtype)
    dq, dk, dv = vjp((d_o, d_l))
    return dq.astype(jnp.float32), dk.astype(jnp.float32), dv.astype(jnp.float32)


# ------------------------------------------------------------------------------------ the rings
def _ring_forward(q, k, v, seg, *, axis, n, layout, causal, block_fn, scale):
    i = jax.lax.axis_index(axis)
    t = q.shape[1]
    idx = local_indices(i, t, n, layout)
    perm = [(d, (d + 1) % n) for d in range(n)]
    branches = [functools.partial(_part, c, block_fn=block_fn, scale=scale) for c in range(5)]

    def attend(s, k_, v_, kv_seg):
        c = _case(i, (i - s) % n, causal, layout)
        return jax.lax.switch(c, [lambda *a, b=b: b(*a) for b in branches], q, k_, v_, seg, kv_seg, idx)

    def step(s, carry):
        o, l, k_, v_, kv_seg = carry
        nxt = jax.lax.ppermute((k_, v_, kv_seg), axis, perm)  # sent while this block is used
        o, l = merge([(o, l), attend(s, k_, v_, kv_seg)])
        return (o, l, *nxt)

    o0 = jnp.zeros(q.shape, jnp.float32)
    l0 = jnp.full(q.shape[:3], NO_KEYS, jnp.float32)
    o, l, k_, v_, kv_seg = jax.lax.fori_loop(0, n - 1, step, (o0, l0, k, v, seg))
    return merge([(o, l), attend(n - 1, k_, v_, kv_seg)])


def _ring_backward(q, k, v, seg, out, lse, dout, *, axis, n, layout, causal, block_fn, scale):
    i = jax.lax.axis_index(axis)
    t = q.shape[1]
    idx = local_indices(i, t, n, layout)
    perm = [(d, (d + 1) % n) for d in range(n)]
    branches = [functools.partial(_part_grads, c, block_fn=block_fn, scale=scale) for c in range(5)]

    def step(s, carry):
        dq, k_, v_, kv_seg, dk, dv = carry
        c = _case(i, (i - s) % n, causal, layout)
        gq, gk, gv = jax.lax.switch(c, [lambda *a, b=b: b(*a) for b in branches],
                                    q, k_, v_, seg, kv_seg, idx, out, lse, dout)
        # dK, dV travel with their block; after n hops they are back on the block's own device.
        k_, v_, kv_seg, dk, dv = jax.lax.ppermute((k_, v_, kv_seg, dk + gk, dv + gv), axis, perm)
        return dq + gq, k_, v_, kv_seg, dk, dv

    z = functools.partial(jnp.zeros, dtype=jnp.float32)
    dq, _, _, _, dk, dv = jax.lax.fori_loop(0, n, step, (z(q.shape), k, v, seg, z(k.shape), z(v.shape)))
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _ring_local(q, k, v, seg, opts):
    out, _ = _ring_forward(q, k, v, seg, **dict(opts))
    return out.astype(q.dtype)


def _ring_local_fwd(q, k, v, seg, opts):
    out, lse = _ring_forward(q, k, v, seg, **dict(opts))
    return out.astype(q.dtype), (q, k, v, seg, out, lse)


def _ring_local_bwd(opts, res, dout):
    q, k, v, seg, out, lse = res
    dq, dk, dv = _ring_backward(q, k, v, seg, out, lse, dout.astype(jnp.float32), **dict(opts))
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_ring_local.defvjp(_ring_local_fwd, _ring_local_bwd)


def _local_entry(q, k, v, seg, opts, has_seg: bool):
    return _ring_local(q, k, v, seg if has_seg else None, opts)


class _Opts(tuple):
    """Hashable static options of one ring call (custom_vjp's nondiff argument)."""


def ring_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None, *,
                   causal: bool = True, scale: float | None = None, layout: str = "contiguous",
                   axis: str = "sequence", mesh=None, block_fn: BlockFn | None = None) -> jax.Array:
    """Self-attention with the sequence split over the mesh axis `axis`.

    Call it under `jax.jit` with the mesh set (`jax.set_mesh`) or pass `mesh`. The arrays are the
    global view (any sharding; the sequence axis is split over `axis`, the batch over the mesh's
    batch axes and the heads over `tensor` when they divide evenly).

    Args:
      q: [B, T, N, H]; k, v: [B, T, K, H] (N % K == 0), in `layout` order along T.
      segment_ids: optional [B, T] ids in the same order; tokens see keys of their own id only.
      causal: mask keys that come later in the original sequence.
      scale: logit scale (default H ** -0.5).
      layout: "contiguous" or "zigzag" (see the module docstring and `to_zigzag`).
      axis: mesh axis to ring over.
      mesh: the mesh (default: the context mesh).
      block_fn: per-block attention returning (out, lse) (default: `default_block_fn()`).

    Returns:
      [B, T, N, H] in q's dtype, same order as q.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown ring layout {layout!r}; expected one of {LAYOUTS}")
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    sizes = mesh_axis_sizes(mesh)
    n = sizes.get(axis, 1)
    B, T, N, H = q.shape
    K = k.shape[2]
    scale = H ** -0.5 if scale is None else float(scale)
    block_fn = default_block_fn() if block_fn is None else block_fn
    if k.shape[1] != T or v.shape != k.shape:
        raise ValueError(f"ring attention is self-attention: q {q.shape}, k {k.shape}, v {v.shape}")
    if segment_ids is not None and segment_ids.shape != (B, T):
        raise ValueError(f"segment_ids shape {segment_ids.shape} != (batch, length) = {(B, T)}")
    if n == 1:
        return block_fn(q, k, v, segment_ids=segment_ids, causal=causal, scale=scale)[0]
    split = 2 * n if layout == "zigzag" else n
    if T % split:
        raise ValueError(f"sequence length {T} is not divisible by {split} ({layout} layout over "
                         f"{axis}={n})")
    batch = batch_axes(mesh)
    if batch and B % math.prod(sizes[a] for a in batch):
        batch = ()
    tp = sizes.get("tensor", 1)
    heads = "tensor" if tp > 1 and N % tp == 0 and K % tp == 0 else None
    x_spec = P(batch or None, axis, heads, None)
    s_spec = P(batch or None, axis)
    opts = _Opts(sorted(dict(axis=axis, n=n, layout=layout, causal=causal, block_fn=block_fn,
                             scale=scale).items()))
    has_seg = segment_ids is not None
    seg = segment_ids.astype(jnp.int32) if has_seg else jnp.zeros((B, T), jnp.int32)
    body = functools.partial(_local_entry, opts=opts, has_seg=has_seg)
    return jax.shard_map(body, mesh=mesh, in_specs=(x_spec, x_spec, x_spec, s_spec), out_specs=x_spec,
                         check_vma=False)(q, k, v, seg)
