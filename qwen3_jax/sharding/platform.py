"""Which platform a computation is being compiled for.

Platform-dependent choices (the MoE grouped-matmul implementation, the expert-parallel token
exchange, the decode layout) must follow the devices the program is compiled for, not the host's
default backend: compiling from a CPU host for a TPU slice (ahead-of-time, with abstract TPU
devices from `jax.experimental.topologies`) must pick what the TPU runs. The mesh entered with
`jax.set_mesh` carries its devices' platform in its abstract mesh (`abstract_device`), also while
tracing, so that is the first source; `jax.default_backend()` is the fallback when no mesh is set.
"""

from __future__ import annotations

import jax


def mesh_platform(mesh) -> str | None:
    """Platform of a `Mesh`'s or `AbstractMesh`'s devices ("cpu", "tpu", "gpu"), or None if unknown."""
    if mesh is None or getattr(mesh, "empty", False):
        return None
    if isinstance(mesh, jax.sharding.Mesh):
        return mesh.devices.flat[0].platform if mesh.devices.size else None
    device = getattr(mesh, "abstract_device", None)
    return None if device is None else device.platform


def mesh_device_kind(mesh) -> str | None:
    """`device_kind` of a `Mesh`'s or `AbstractMesh`'s devices (e.g. "TPU v6 lite"), or None if unknown."""
    if mesh is None or getattr(mesh, "empty", False):
        return None
    if isinstance(mesh, jax.sharding.Mesh):
        return mesh.devices.flat[0].device_kind if mesh.devices.size else None
    device = getattr(mesh, "abstract_device", None)
    return None if device is None else device.device_kind


def target_device_kind(mesh=None) -> str:
    """The device kind of `mesh` (default: the context mesh), else of the default backend's first device."""
    found = mesh_device_kind(mesh) if mesh is not None else None
    if found is None:
        found = mesh_device_kind(jax.sharding.get_abstract_mesh())
    return found or jax.devices()[0].device_kind


def target_platform(mesh=None) -> str:
    """The platform of `mesh` (default: the context mesh of `jax.set_mesh`), else the default backend."""
    found = mesh_platform(mesh) if mesh is not None else None
    if found is None:
        found = mesh_platform(jax.sharding.get_abstract_mesh())
    return found or jax.default_backend()
