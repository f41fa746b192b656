"""Per-device pieces shared by the fixed (`ops.expert_parallel`) and ragged
(`ops.expert_parallel_ragged`) expert-parallel dispatches.

Both dispatches sort a device's token copies by expert (`dispatch_plan`), run the experts a device
holds on the rows it received (`local_expert_ffn`, after `gather_weights` undoes the fsdp split of
the local experts) and sum the returned rows with their routing weights (`combine`). Only the
exchange between devices differs, so only it lives in the two dispatch modules; both import from
here and neither imports the other's helpers.

Letters: n local tokens, k experts per token, D model dim, F expert MLP dim, E_l local experts,
M received rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qwen3_jax.ops import moe as moe_ops


def dispatch_plan(ids: jax.Array, valid: jax.Array, num_experts: int, ep: int, capacity: int):
    """Where each token copy goes in the [ep, capacity] send buffer.

    Args:
      ids: [n, k] expert ids of the local tokens.
      valid: [n] bool; invalid (padding) tokens are neither sent nor counted.
      num_experts, ep: E and the expert-axis size; device d holds experts d·E/ep .. (d+1)·E/ep - 1.
      capacity: rows per destination.

    Returns:
      dict with
        order [n·k]: sorted position -> copy index (token · k + slot);
        sorted_e [n·k]: expert of each sorted copy (E for invalid tokens);
        slot [n·k]: row of the flat send buffer [ep · capacity] (ep · capacity when not sent);
        keep [n·k]: copy is sent;
        counts [E]: copies routed to each expert (before any drop);
        dropped: int32 number of valid copies that did not fit.
    """
    n, k = ids.shape
    local = num_experts // ep
    flat = jnp.where(valid[:, None], ids, num_experts).reshape(-1)
    order = jnp.argsort(flat, stable=True)
    sorted_e = flat[order]
    counts = jnp.bincount(flat, length=num_experts + 1)[:num_experts].astype(jnp.int32)
    per_dest = counts.reshape(ep, local).sum(axis=1)
    dest_start = jnp.cumsum(per_dest) - per_dest
    live = sorted_e < num_experts
    dest = jnp.minimum(sorted_e // local, ep - 1)
    pos = jnp.arange(n * k, dtype=jnp.int32) - dest_start[dest]
    keep = live & (pos < capacity)
    slot = jnp.where(keep, dest * capacity + pos, ep * capacity)
    dropped = jnp.sum(live & ~keep).astype(jnp.int32)
    return dict(order=order, sorted_e=sorted_e, slot=slot, keep=keep, counts=counts, dropped=dropped)


def make_varying(arrays, axes):
    """Marks each array as varying over `axes` (no-op in the forward pass).

    Inside shard_map, using a value that is invariant over an axis in a computation that varies
    over it inserts an implicit cast whose transpose is a `psum` over that axis. Casting up front
    keeps those psums out of `lax.cond` branches, where devices taking different branches would
    wait on each other forever.
    """
    out = []
    for a in arrays:
        missing = tuple(ax for ax in axes if ax not in moe_ops.varying_axes(a))
        out.append(jax.lax.pcast(a, missing, to="varying") if missing else a)
    return out


def local_expert_ffn(rows: jax.Array, row_e: jax.Array, wg, wu, wd, impl: str, tm: int | None = None):
    """SwiGLU of each row with its local expert; rows with `row_e == E_l` (empty) give zeros.

    Args:
      rows: [M, D] rows in any order.
      row_e: [M] local expert id of each row, or E_l for an empty row.
      wg, wu: [E_l, D, F]; wd: [E_l, F, D] (F may be a tensor-parallel shard).
      impl: "tiled", "ragged" or "dense" (see `ops.moe`).
      tm: tile height of the tiled path (default: from the row count).
    """
    M = rows.shape[0]
    El = wg.shape[0]
    used = row_e < El
    rows, wg, wu, wd = make_varying((rows, wg, wu, wd), moe_ops.varying_axes(rows, wg, wu, wd))
    if impl == "dense":
        outs = jax.vmap(lambda g, u, d: moe_ops._swiglu(rows, g, u, d))(wg, wu, wd)  # [E_l, M, D]
        pick = jax.nn.one_hot(row_e, El, dtype=rows.dtype)  # empty rows pick nothing
        return jnp.einsum("ME,EMD->MD", pick, outs.astype(rows.dtype))
    order = jnp.argsort(row_e, stable=True)  # empty rows last
    sorted_e = row_e[order]
    sizes = jnp.bincount(row_e, length=El + 1)[:El].astype(jnp.int32)
    xs = rows[order]
    if impl == "tiled":
        # Empty rows are clipped to the last expert but lie past every group (sizes excludes them),
        # so they land in padding or in tiles that are skipped; their outputs are masked below.
        ys = moe_ops.grouped_ffn_tiled(xs, jnp.minimum(sorted_e, El - 1), sizes, wg, wu, wd, tm=tm)
    elif impl == "ragged":
        ys = moe_ops.grouped_ffn_ragged(xs, sizes, wg, wu, wd)
    else:
        raise ValueError(f"unknown expert implementation {impl!r}")
    out = jnp.zeros((M, ys.shape[-1]), rows.dtype).at[order].set(ys.astype(rows.dtype))
    return jnp.where(used[:, None], out, 0)


def gather_weights(wg, wu, wd, fsdp: str | None):
    """All-gathers the fsdp shards (the D dim) of the local experts; the expert dim stays local."""
    if fsdp is None:
        return wg, wu, wd
    return (jax.lax.all_gather(wg, fsdp, axis=1, tiled=True), jax.lax.all_gather(wu, fsdp, axis=1, tiled=True),
            jax.lax.all_gather(wd, fsdp, axis=2, tiled=True))


def combine(sorted_out, plan, weights):
    """Un-permutes the per-copy outputs [n·k, D] (sorted order) and sums them with the routing weights."""
    n, k = weights.shape
    copies = jnp.zeros(sorted_out.shape, sorted_out.dtype).at[plan["order"]].set(sorted_out)
    return jnp.einsum("MRD,MR->MD", copies.reshape(n, k, -1), weights)
