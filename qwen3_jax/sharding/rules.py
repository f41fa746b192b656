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


def rules_for_mesh(mesh, rules=RULES, *, num_kv_heads: int | None = None):
    """Restricts `rules` to the axes `mesh` has (size > 1 not required).

    When `num_kv_heads` is given and the `tensor` axis is larger than it, KV heads are replicated
    instead of split (a KV head cannot be divided across devices).
    """
    names = set(mesh.axis_names) if mesh is not None else set()
    sizes = dict(zip(mesh.axis_names, mesh.devices.shape)) if mesh is not None else {}
    out = []
    for logical, target in rules:
        if logical in ("kv_heads", "act_kv_heads") and num_kv_heads is not None:
            if sizes.get("tensor", 1) > 1 and num_kv_heads % sizes.get("tensor", 1):
                target = None
        if target is None:
            out.append((logical, None))
            continue
        axes = (target,) if isinstance(target, str) else tuple(target)
        kept = tuple(a for a in axes if a in names)
        out.append((logical, kept if len(kept) > 1 else (kept[0] if kept else None)))
    return tuple(out)


def logical_spec(names: Sequence[str | None], rules=RULES):
    """The PartitionSpec that `rules` give to an array with logical axis `names`."""
    import flax.linen as nn

    return nn.logical_to_mesh_axes(tuple(names), rules)
