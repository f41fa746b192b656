"""Building device meshes from a short spec such as "data=2,tensor=4".

Meshes use `AxisType.Auto`: Flax Linen's logical constraints (`nn.with_logical_constraint`) need
Auto axes and an abstract mesh set with `jax.set_mesh`, while JAX 0.10's `jax.make_mesh` defaults
to Explicit axes (see `flax/linen/spmd.py` and the JAX "explicit sharding" docs). Axis order follows `MESH_AXES`, outermost first,
so the data axes span hosts and `tensor` stays within neighbouring devices.
"""

from __future__ import annotations

import math

import jax
from jax.sharding import AxisType, Mesh

from qwen3_jax.sharding.rules import MESH_AXES


def parse_mesh_spec(spec: str | dict[str, int]) -> dict[str, int]:
    """"data=2,tensor=4" -> {"data": 2, "tensor": 4}; one size may be -1 (all remaining devices)."""
    if isinstance(spec, dict):
        sizes = dict(spec)
        bad = {a: s for a, s in sizes.items() if isinstance(s, bool) or not isinstance(s, int)}
        if bad:
            raise ValueError(f"mesh spec {spec!r}: sizes must be integers, got {bad}")
    elif isinstance(spec, str):
        sizes = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if "=" not in part:
                raise ValueError(f"mesh spec {spec!r}: {part!r} is not of the form axis=size")
            name, size = (s.strip() for s in part.split("=", 1))
            if name in sizes:
                raise ValueError(f"mesh spec {spec!r}: axis {name!r} is given twice")
            try:
                sizes[name] = int(size)
            except ValueError:
                raise ValueError(f"mesh spec {spec!r}: size of {name!r} is not an integer: {size!r}") from None
    else:
        raise ValueError(f"mesh spec must be a string such as \"data=2,tensor=4\" or a dict of axis sizes, "
                         f"got {type(spec).__name__} {spec!r}")
    unknown = [a for a in sizes if a not in MESH_AXES]
    if unknown:
        raise ValueError(f"mesh spec {spec!r}: unknown axes {unknown}; known axes: {', '.join(MESH_AXES)}")
    bad = [a for a, s in sizes.items() if s == 0 or s < -1]
    if bad:
        raise ValueError(f"mesh spec {spec!r}: axes {bad} need a size >= 1 (or -1 for the rest)")
    return sizes


def make_mesh(spec: str | dict[str, int], devices=None) -> Mesh:
    """A mesh with Auto axis types over `devices` (default: all devices).

    Args:
      spec: axis sizes, e.g. "data=2,expert=4" or {"tensor": 8}; one axis may be -1.
      devices: devices to use; their number must equal the product of the sizes.
    """
    sizes = parse_mesh_spec(spec)
    devices = list(jax.devices() if devices is None else devices)
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ValueError(f"mesh spec {spec!r}: at most one axis may be -1")
    known = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if len(devices) % known:
            raise ValueError(f"mesh spec {spec!r}: {len(devices)} devices are not divisible by {known}")
        sizes[free[0]] = len(devices) // known
    total = math.prod(sizes.values()) if sizes else 1
    if total != len(devices):
        raise ValueError(f"mesh spec {spec!r} needs {total} devices, but {len(devices)} are available")
    names = tuple(a for a in MESH_AXES if a in sizes) or ("data",)
    shape = tuple(sizes.get(a, 1) for a in names)
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names), devices=devices)
