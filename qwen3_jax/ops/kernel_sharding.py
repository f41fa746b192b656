"""Running a Pallas kernel on a mesh: a `jax.shard_map` over the batch and the heads.

XLA's partitioner cannot split a Mosaic custom call: lowered for a TPU mesh with more than one
device, a `pallas_call` that is not inside a `shard_map` whose manual axes are *all* the mesh's
axes fails with "Mosaic kernels cannot be automatically partitioned. Please wrap the call in a
shard_map" (`jax/_src/tpu_custom_call.py`). `shard_kernel` wraps a kernel call that way:

* the batch dimension of every argument is split over the mesh's batch axes (`sharding.rules`:
  data, fsdp, expert; only those of size > 1) when the batch divides by their product, else
  replicated;
* the head dimensions are split over `tensor` when the KV heads divide by its size (the query
  heads then do too, and each device keeps whole GQA groups: query head n uses KV head n // G),
  else replicated;
* every other dimension (and any other axis, such as `sequence`) is replicated: each device then
  computes its rows in full, which is correct whatever the axes are.

Each argument and output names its dimensions with a string of one letter per dimension: "B"
batch, "K" heads (query or KV), "." anything else, e.g. "B.K." for q [B, T, N, H]. Inside an
existing `shard_map` (ring attention's body) only the axes that are not manual yet are taken;
when none of size > 1 is left, or there is no mesh, the kernel is called directly. The same
wrapping runs on CPU meshes (interpret mode), where the tests check it against plain attention.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
from jax.sharding import PartitionSpec as P

from qwen3_jax.sharding.rules import batch_axes


def _free_axes(mesh) -> dict[str, int]:
    """{axis: size} of the mesh's axes that are not manual yet ({} without a mesh)."""
    if mesh is None or getattr(mesh, "empty", False):
        return {}
    manual = set(getattr(mesh, "manual_axes", ()) or ())
    return {a: s for a, s in zip(mesh.axis_names, mesh.axis_sizes) if a not in manual}


def _spec(dims: str, batch: tuple[str, ...], heads: str | None) -> P:
    bad = set(dims) - set("BK.")
    if bad:
        raise ValueError(f"dimension string {dims!r} may hold only 'B', 'K' and '.', got {sorted(bad)}")
    return P(*[(batch or None) if d == "B" else heads if d == "K" else None for d in dims])


def shard_kernel(fn: Callable, args: Sequence, dims: Sequence[str | None], out_dims, *, kv_heads: int,
                 mesh=None):
    """fn(*args), run per device over the batch and head shards of the context mesh.

    Args:
      fn: the kernel call; it receives the local shards of the array arguments.
      args: its positional arguments. Arrays are sharded as `dims` says; None (or a `dims` entry of
        None) passes the argument through unchanged (a static value, or None for "absent").
      dims: one dimension string per argument (see the module docstring), or None.
      out_dims: the dimension strings of fn's output, in the same tree structure as the output
        (a string for one array, a tuple of strings for a tuple).
      kv_heads: the number of KV heads (the heads are split over `tensor` only when it divides them).
      mesh: the mesh (default: the context mesh of `jax.set_mesh`).

    Returns:
      fn's output, global arrays.
    """
    if len(args) != len(dims):
        raise ValueError(f"got {len(args)} arguments but {len(dims)} dimension strings")
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    free = _free_axes(mesh)
    if math.prod(free.values()) <= 1:
        return fn(*args)
    mapped = [i for i, (a, d) in enumerate(zip(args, dims)) if a is not None and d is not None]
    for i in mapped:
        if len(dims[i]) != args[i].ndim:
            raise ValueError(f"argument {i} has shape {tuple(args[i].shape)} but dimension string {dims[i]!r}")
    rows = {args[i].shape[dims[i].index("B")] for i in mapped if "B" in dims[i]}
    batch = tuple(a for a in batch_axes(mesh) if a in free)
    if batch and any(b % math.prod(free[a] for a in batch) for b in rows):
        batch = ()
    tp = free.get("tensor", 1)
    heads = "tensor" if tp > 1 and kv_heads % tp == 0 else None

    def body(*local):
        full = list(args)
        for i, x in zip(mapped, local):
            full[i] = x
        return fn(*full)

    in_specs = tuple(_spec(dims[i], batch, heads) for i in mapped)
    out_specs = jax.tree.map(lambda d: _spec(d, batch, heads), out_dims)
    return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs, axis_names=frozenset(free),
                         check_vma=False)(*[args[i] for i in mapped])
