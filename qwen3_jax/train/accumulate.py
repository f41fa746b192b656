"""Gradient accumulation: the split of a global batch into micro-batches and the sum of their gradients.

The split is by stride: micro-batch i holds rows i, i + A, i + 2A, ... of the [B, T] batch. The
batch is sharded over the batch axes (data, fsdp, expert) in contiguous blocks of B / n rows, so
every device already holds B / (n·A) rows of every micro-batch: each micro-batch runs on all the
devices and the split moves nothing. (Cutting the batch into contiguous blocks instead would put
micro-batch i on devices i·n/A .. (i+1)·n/A - 1 only, so each micro-batch would be resharded or
run on a fraction of the devices.) The loss is a sum over rows, so the order of the rows does not
change the accumulated gradient.

Two accumulators, the same sums:

* `sharded_sum` (any mesh): the scan's carry has the params' shardings, so each micro-batch's
  gradient is reduced into them as it is produced (a reduce-scatter over fsdp, which FSDP needs
  anyway since it gathers the weights again for every micro-batch; an all-reduce over data).
* `local_sum` (pure data parallelism: `data` is the only mesh axis of size > 1): in a `shard_map`
  over the mesh, each device adds up the gradients of its own rows over all micro-batches and the
  sums are all-reduced once after the scan: one all-reduce of the gradients per step instead of
  one per micro-batch (GSPMD shardings cannot express a pending sum as a scan carry, so the
  partitioner would reduce every micro-batch's gradient).
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from qwen3_jax.sharding.rules import mesh_axis_sizes


def _shards(mesh: Mesh, entry) -> int:
    """Number of shards of one PartitionSpec entry (None, an axis name or a tuple of them) on `mesh`."""
    sizes = mesh_axis_sizes(mesh)
    axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    return math.prod(sizes[a] for a in axes)


def spreads(rows: int, A: int, mesh: Mesh, batch_spec: P) -> bool:
    """Whether each of the A micro-batches of `rows` rows divides over the batch's shards."""
    return (rows // A) % _shards(mesh, batch_spec[0] if len(batch_spec) else None) == 0


def split(batch: dict, A: int, mesh: Mesh, batch_spec: P) -> dict:
    """[B, T] arrays -> [A, B / A, T]; micro-batch i = rows i, i + A, ... (see the module docstring).

    `batch_spec` is the batch's PartitionSpec; each micro-batch keeps it (rows over the batch axes)
    when its B / A rows divide over them.
    """

    def one(x):
        m = x.reshape(x.shape[0] // A, A, *x.shape[1:]).swapaxes(0, 1)
        if not spreads(x.shape[0], A, mesh, batch_spec):
            return m
        return jax.lax.with_sharding_constraint(m, NamedSharding(mesh, P(None, *batch_spec)))

    return jax.tree.map(one, batch)


def pure_data_parallel(mesh: Mesh) -> bool:
    """True when `data` is the only mesh axis of size > 1 (params and optimizer state replicated)."""
    sizes = mesh_axis_sizes(mesh)
    return sizes.get("data", 1) > 1 and all(v == 1 for a, v in sizes.items() if a != "data")


def sharded_sum(grad_fn: Callable, params, micro, args: tuple, aux0: dict, shardings=None):
    """Scans `grad_fn(params, micro_batch, *args) -> ((loss, aux), grads)` over the micro-batches.

    Returns (summed grads, summed loss, summed aux). `shardings`: constrain the gradient sum to
    these after each micro-batch.
    """

    def body(carry, mb):
        g_acc, l_acc, a_acc = carry
        (loss, aux), g = grad_fn(params, mb, *args)
        g_acc = jax.tree.map(jnp.add, g_acc, g)
        if shardings is not None:
            g_acc = jax.lax.with_sharding_constraint(g_acc, shardings)
        return (g_acc, l_acc + loss, jax.tree.map(jnp.add, a_acc, aux)), None

    init = (jax.tree.map(lambda p: jnp.zeros(p.shape, p.dtype), params), jnp.zeros((), jnp.float32), aux0)
    (grads, loss, aux), _ = jax.lax.scan(body, init, micro)
    return grads, loss, aux


def local_sum(grad_fn: Callable, params, micro, args: tuple, aux0: dict, mesh: Mesh, batch_spec: P):
    """`sharded_sum` per device in a `shard_map` over `mesh`, the sums all-reduced once at the end.

    Only for `pure_data_parallel` meshes (the params enter replicated) and micro-batches that
    `spreads` over them. `args` must be replicated
    values; `grad_fn`'s loss must be a sum over rows (each device's share adds up to the whole).
    Inside, the model's logical sharding constraints are off (every axis is manual).
    """
    axes = tuple(mesh.axis_names)

    def body(params, micro, args):
        # check_vma=False: the params are not marked as varying, so their gradients stay this
        # device's own (no implicit psum per micro-batch) and the model's scans need no changes.
        with nn.logical_axis_rules(()):
            out = sharded_sum(grad_fn, params, micro, args, aux0)
        return jax.lax.psum(out, axes)

    return jax.shard_map(body, mesh=mesh, in_specs=(P(), P(None, *batch_spec), P()), out_specs=P(),
                         check_vma=False)(params, micro, args)
