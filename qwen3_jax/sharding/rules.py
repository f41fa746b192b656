"""Logical axis names and the one table that maps them to mesh axes.

Model code names axes only logically (`nn.with_logical_partitioning` on parameters,
`nn.with_logical_constraint` on activations). `RULES` below maps each logical name to the mesh axes
`data, fsdp, expert, tensor, sequence`. A mesh may omit axes; a rule naming a missing mesh axis is
dropped for that mesh (see `rules_for_mesh`).

Parameters use `embed` for the model dimension (sharded by FSDP); activations use `act_embed`
(never sharded: their batch dimension carries the data parallelism instead).
"""

from __future__ import annotations

from typing import Sequence

MESH_AXES = ("data", "fsdp", "expert", "tensor", "sequence")

# logical name -> mesh axis, tuple of mesh axes, or None (replicated)
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("expert", "expert"),
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


def rules_for_mesh(mesh, rules=RULES, *, sizes: dict[str, int] | None = None):
    """Restricts `rules` to the axes `mesh` has, and to the splits the model's sizes allow.

    Args:
      mesh: the mesh (None gives all-replicated rules).
      rules: the logical rules table.
      sizes: optional logical name -> dimension size (e.g. {"kv_heads": 4}). A logical axis whose size
        is not divisible by its mesh axes is replicated instead: with `tensor=8` and 4 KV heads the KV
        heads are replicated rather than failing.
    """
    names = set(mesh.axis_names) if mesh is not None else set()
    mesh_sizes = dict(zip(mesh.axis_names, mesh.devices.shape)) if mesh is not None else {}
    sizes = sizes or {}
    out = []
    for logical, target in rules:
        axes = () if target is None else ((target,) if isinstance(target, str) else tuple(target))
        kept = tuple(a for a in axes if a in names)
        if logical in sizes:
            split = 1
            for a in kept:
                split *= mesh_sizes[a]
            if sizes[logical] % split:
                kept = ()
        out.append((logical, kept if len(kept) > 1 else (kept[0] if kept else None)))
    return tuple(out)


def logical_spec(names: Sequence[str | None], rules=RULES):
    """The PartitionSpec that `rules` give to an array with logical axis `names`."""
    import flax.linen as nn

    return nn.logical_to_mesh_axes(tuple(names), rules)
