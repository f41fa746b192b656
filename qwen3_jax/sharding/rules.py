"""Logical axis names and the one table that maps them to mesh axes.

Model code names axes only logically (`nn.with_logical_partitioning` on parameters,
`nn.with_logical_constraint` on activations). `RULES` below maps each logical name to the mesh axes
`data, fsdp, expert, tensor, sequence`. A mesh may omit axes; a rule naming a missing mesh axis is
dropped for that mesh (see `rules_for_mesh`).

Parameters use `embed` for the model dimension (sharded by FSDP); activations use `act_embed`
(never sharded: their batch dimension carries the data parallelism instead).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax

MESH_AXES = ("data", "fsdp", "expert", "tensor", "sequence")

# logical name -> mesh axis, tuple of mesh axes, or None (replicated). A name may have several
# rules: the first whose mesh axes the array has not used yet applies (Flax's precedence order).
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("expert", "expert"),
    # The model dimension of dense weights (attention, dense MLP, router, embeddings) is sharded over
    # fsdp and expert, so an expert-parallel mesh does not replicate them (and their optimizer state)
    # on every expert shard; expert weights already use the expert axis and fall back to fsdp alone.
    ("embed", ("fsdp", "expert")),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("moe_mlp", "tensor"),
    ("router", None),
    ("layers", None),
    ("norm", None),
    # activations
    ("batch", ("data", "fsdp", "expert")),
    ("length", "sequence"),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_length", None),
)


def mesh_axis_sizes(mesh=None) -> dict[str, int]:
    """{axis name: size} of `mesh`; by default the context mesh set by `jax.set_mesh` ({} when none).

    Works for concrete meshes and for the abstract mesh seen inside a trace.
    """
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    if mesh is None or getattr(mesh, "empty", False):
        return {}
    return dict(zip(mesh.axis_names, mesh.axis_sizes))


def _rule_axes(logical: str, rules=RULES) -> tuple[str, ...]:
    target = dict(rules)[logical]
    return () if target is None else ((target,) if isinstance(target, str) else tuple(target))


def batch_axes(mesh=None, rules=RULES) -> tuple[str, ...]:
    """Mesh axes of size > 1 that split the batch (the `batch` rule), outermost first."""
    sizes = mesh_axis_sizes(mesh)
    return tuple(a for a in _rule_axes("batch", rules) if sizes.get(a, 1) > 1)


def token_axes(mesh=None, rules=RULES) -> tuple[str, ...]:
    """Mesh axes of size > 1 that split tokens once batch and length are flattened (`batch`, then `length`)."""
    sizes = mesh_axis_sizes(mesh)
    axes = _rule_axes("batch", rules) + _rule_axes("length", rules)
    return tuple(a for a in axes if sizes.get(a, 1) > 1)


def batch_multiple(mesh=None, rules=RULES) -> int:
    """Number of batch shards: a sharded batch is padded to a multiple of this."""
    sizes = mesh_axis_sizes(mesh)
    return math.prod(sizes[a] for a in batch_axes(mesh, rules))


def rules_for_mesh(mesh, rules=RULES, *, sizes: dict[str, int] | None = None):
    """Restricts `rules` to the axes `mesh` has, and to the splits the model's sizes allow.

    Args:
      mesh: the mesh (None gives all-replicated rules).
      rules: the logical rules table.
      sizes: optional logical name -> dimension size (e.g. {"kv_heads": 4}). A logical axis whose size
        is not divisible by its mesh axes is replicated instead: with `tensor=8` and 4 KV heads the KV
        heads are replicated rather than failing.
    """
    mesh_sizes = mesh_axis_sizes(mesh) if mesh is not None else {}
    names = set(mesh_sizes)
    sizes = sizes or {}
    out = []
    for i, (logical, target) in enumerate(rules):
        axes = _rule_axes(logical, ((logical, target),))
        kept = tuple(a for a in axes if a in names)
        if logical in sizes:
            split = 1
            for a in kept:
                split *= mesh_sizes[a]
            if sizes[logical] % split:
                kept = ()
        if not kept and axes and any(name == logical for name, _ in rules[i + 1:]):
            continue  # an unusable rule must not replicate the name: the next rule for it decides
        out.append((logical, kept if len(kept) > 1 else (kept[0] if kept else None)))
    return tuple(out)


def logical_spec(names: Sequence[str | None], rules=RULES):
    """The PartitionSpec that `rules` give to an array with logical axis `names`."""
    import flax.linen as nn

    return nn.logical_to_mesh_axes(tuple(names), rules)
