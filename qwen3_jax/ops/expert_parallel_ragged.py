"""Ragged expert-parallel dispatch: `jax.lax.ragged_all_to_all` sends exactly the routed rows.

The fixed dispatch (`ops.expert_parallel`) moves ep blocks of C rows per device whatever the routing;
here each device sends, to each destination, the contiguous run of its expert-sorted copies that
belong to that destination's experts, and receives them packed, source after source.

Everything a device needs to place the rows follows from the matrix of routed counts
[source device, expert], all-gathered over the `expert` axis (E integers per device):

* forward:  input_offsets[d] = start of destination d's run in my sorted copies,
            send_sizes[d]    = rows of that run accepted by d,
            output_offsets[d]= rows that sources before me send to d (where my run lands on d),
            recv_sizes[s]    = rows source s sends me;
* backward: the same with sender and receiver swapped.

Capacity: a receiver holds at most R rows (dropless: R = ep·n·min(k, E_l), the worst case;
with `capacity_factor`: R = ceil(factor·n·k)). Sources are accepted in device order and a source's
run is cut at its tail (highest local expert, latest tokens), so every device can compute every cut
from the count matrix alone. Note the capacity is per receiver here, per (sender, receiver) pair in
the fixed dispatch; in dropless mode both equal the single-device model.

XLA:CPU does not implement ragged-all-to-all. `emulated_ragged_all_to_all` reproduces its semantics
with a fixed `all_to_all` of padded blocks so the whole path (plans, local permutation, gradients)
is tested on CPU; only the primitive itself is then untested here.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from qwen3_jax.ops import moe as moe_ops
from qwen3_jax.ops.expert_parallel_local import combine, dispatch_plan, gather_weights, local_expert_ffn


def receive_rows(local_tokens: int, top_k: int, num_experts: int, ep: int, capacity_factor: float | None) -> int:
    """Rows of a device's receive buffer (see the module docstring)."""
    dropless = ep * local_tokens * min(top_k, num_experts // ep)
    if capacity_factor is None:
        return max(1, dropless)
    if capacity_factor <= 0:
        raise ValueError(f"capacity_factor must be > 0 (or None for dropless), got {capacity_factor}")
    return max(1, min(dropless, math.ceil(capacity_factor * local_tokens * top_k)))


def ragged_plan(all_counts: jax.Array, me, ep: int, capacity: int) -> dict:
    """Offsets and sizes of both ragged all-to-alls, for device `me` on the expert axis.

    Args:
      all_counts: [ep, E] int: copies each source device routes to each expert.
      me: this device's index on the expert axis (traced or int).
      ep: expert-axis size.
      capacity: receive-buffer rows per device.

    Returns:
      dict of int32 arrays:
        fwd: (input_offsets, send_sizes, output_offsets, recv_sizes), each [ep];
        bwd: the same for sending results back;
        send_start [ep]: start of each destination's run in my sorted copies;
        accepted [ep]: rows of my run to each destination that fit there;
        row_expert [capacity]: local expert of each received row (E_l for empty rows).
    """
    E = all_counts.shape[1]
    El = E // ep
    c = all_counts.astype(jnp.int32).reshape(ep, ep, El)  # [src, dst, local expert]
    c_sd = c.sum(-1)  # [src, dst]
    a = jnp.clip(capacity - (jnp.cumsum(c_sd, axis=0) - c_sd), 0, c_sd)  # accepted rows [src, dst]
    a_before = jnp.cumsum(a, axis=0) - a  # where src's run starts on dst
    run_start = jnp.cumsum(c_sd, axis=1) - c_sd  # where dst's run starts in src's sorted copies

    # Rows of source s at me, cut to a[s, me], split by local expert (the run is expert-sorted).
    cm = c[:, me, :]  # [src, E_l]
    acc = jnp.clip(a[:, me][:, None] - (jnp.cumsum(cm, axis=1) - cm), 0, cm)
    ends = jnp.cumsum(acc.reshape(-1))  # blocks (src, local expert) in receive order
    r = jnp.arange(capacity, dtype=jnp.int32)
    block = jnp.searchsorted(ends, r, side="right").astype(jnp.int32)
    row_expert = jnp.where(r < ends[-1], block % El, El).astype(jnp.int32)

    fwd = (run_start[me], a[me], a_before[me], a[:, me])
    bwd = (a_before[:, me], a[:, me], run_start[:, me], a[me])
    i32 = lambda t: tuple(v.astype(jnp.int32) for v in t)
    return dict(fwd=i32(fwd), bwd=i32(bwd), send_start=run_start[me], accepted=a[me], row_expert=row_expert)


def emulated_ragged_all_to_all(operand, output, input_offsets, send_sizes, output_offsets, recv_sizes, *,
                               axis_name):
    """`jax.lax.ragged_all_to_all` (one slice per device) built from a fixed `all_to_all`.

    Every slice is padded to the operand's length, exchanged, and scattered at the offsets the
    receiver learns by exchanging `output_offsets`, exactly as the primitive's documentation states.
    """
    M = operand.shape[0]
    i = jnp.arange(M, dtype=jnp.int32)
    idx = jnp.clip(input_offsets[:, None] + i[None, :], 0, M - 1)  # [ep, M]
    mask = (i[None, :] < send_sizes[:, None]).reshape(idx.shape + (1,) * (operand.ndim - 1))
    blocks = jnp.where(mask, operand[idx], 0)  # [ep, M, ...]
    got = jax.lax.all_to_all(blocks, axis_name, 0, 0, tiled=True)  # [src, M, ...]
    where_ = jax.lax.all_to_all(output_offsets, axis_name, 0, 0, tiled=True)  # my offset of src's slice
    dst = jnp.where(i[None, :] < recv_sizes[:, None], where_[:, None] + i[None, :], output.shape[0])
    return output.at[dst.reshape(-1)].set(got.reshape((-1,) + operand.shape[1:]), mode="drop")


def local_ragged(x, logits, valid, wg, wu, wd, *, top_k, norm_topk_prob, capacity_factor, impl, ep, fsdp,
                 tensor, token_axes, emulate=False):
    """Per-device body of the ragged dispatch (arguments as in `expert_parallel._local_fixed`)."""
    a2a = (lambda *a: emulated_ragged_all_to_all(*a, axis_name="expert")) if emulate else (
        lambda *a: jax.lax.ragged_all_to_all(*a, axis_name="expert"))
    wg, wu, wd = gather_weights(wg, wu, wd, fsdp)
    El = wg.shape[0]
    E = El * ep
    n, D = x.shape
    weights, ids = moe_ops.route(logits, top_k, norm_topk_prob, x.dtype)
    plan = dispatch_plan(ids, valid, E, ep, capacity=n * top_k)  # only the sort and counts are used
    xs = x[plan["order"] // top_k]  # [n·k, D] sorted by expert = by destination; invalid rows last

    all_counts = jax.lax.all_gather(plan["counts"], "expert")  # [ep, E]
    me = jax.lax.axis_index("expert")
    R = receive_rows(n, top_k, E, ep, capacity_factor)
    rp = ragged_plan(all_counts, me, ep, R)
    recv = a2a(xs, jnp.zeros((R, D), x.dtype), *rp["fwd"])
    out = local_expert_ffn(recv, rp["row_expert"], wg, wu, wd, impl, moe_ops._tile_rows(n * top_k, El))
    if tensor is not None:
        out = jax.lax.psum(out, tensor)
    back = a2a(out, jnp.zeros((n * top_k, D), x.dtype), *rp["bwd"])

    # A sorted copy came back iff it lies within the accepted head of its destination's run.
    live = plan["sorted_e"] < E
    dest = jnp.minimum(plan["sorted_e"] // El, ep - 1)
    pos = jnp.arange(n * top_k, dtype=jnp.int32) - rp["send_start"][dest]
    kept = live & (pos < rp["accepted"][dest])
    y = combine(jnp.where(kept[:, None], back, 0), plan, weights)
    dropped = (jnp.sum(live) - jnp.sum(kept)).astype(jnp.int32)
    return y, jax.lax.psum(dropped, token_axes)
