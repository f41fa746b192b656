"""Cloud TPU slices by their Cloud names, with the chip figures the plan measures against.

A slice is named as Cloud TPU names accelerator types: `v4-N`, `v5p-N` (N counts TensorCores, two
per chip), `v5e-N` / `v5litepod-N`, `v6e-N` (N counts chips). A topology string as
`jax.experimental.topologies.get_topology_desc` takes it ("v5p:2x2x1", "v6e:4x8") is accepted too.

Per-chip figures, from the Cloud TPU system-architecture pages (HBM in the unit each page states;
the decimal-GB figures are taken as 10^9 bytes, which errs on the side of less memory):

| chip | HBM per chip | peak bf16 per chip | ICI per chip | source |
|------|--------------|--------------------|--------------|--------|
| v4   | 32 GiB       | 275 TFLOP/s        | (not stated) | https://cloud.google.com/tpu/docs/v4 |
| v5e  | 16 GB        | 197 TFLOP/s        | 400 GB/s bidirectional | https://cloud.google.com/tpu/docs/v5e |
| v5p  | 95 GB        | 459 TFLOP/s        | 4800 Gbps    | https://cloud.google.com/tpu/docs/v5p |
| v6e  | 32 GB        | 918 TFLOP/s        | 800 GB/s bidirectional | https://cloud.google.com/tpu/docs/v6e |

v4 and v5p chips hold two TensorCores run as one device ("megacore"), the layout Cloud TPU VMs
expose; v5e and v6e chips hold one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

GB, GiB = 10**9, 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation's per-chip figures (see the module docstring for sources).

    Attributes:
      name: Cloud name prefix ("v5p").
      jax_name: the name `get_topology_desc` takes ("v5p").
      hbm_bytes: HBM per chip.
      peak_bf16_flops: peak bf16 FLOP/s per chip.
      ici_bytes_per_s: inter-chip bandwidth per chip in bytes/s (None where not stated).
      cores_per_chip: TensorCores per chip (the unit of the Cloud name's number for v4/v5p).
      dims: 3 for 3-D torus slices (v4, v5p), 2 for 2-D (v5e, v6e).
      chip_config: `chip_config_name` for `get_topology_desc`.
      max_chips: largest single slice.
    """

    name: str
    jax_name: str
    hbm_bytes: int
    peak_bf16_flops: float
    ici_bytes_per_s: float | None
    cores_per_chip: int
    dims: int
    chip_config: str
    max_chips: int


CHIPS = {
    "v4": Chip("v4", "v4", 32 * GiB, 275e12, None, 2, 3, "megacore", 4096),
    "v5e": Chip("v5e", "v5e", 16 * GB, 197e12, 400e9, 1, 2, "default", 256),
    "v5p": Chip("v5p", "v5p", 95 * GB, 459e12, 4800e9 / 8, 2, 3, "megacore", 8960),
    "v6e": Chip("v6e", "v6e", 32 * GB, 918e12, 800e9, 1, 2, "default", 256),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v5": "v5p"}


class TopologyError(ValueError):
    """A slice name that is not a Cloud TPU slice this module knows."""


@dataclasses.dataclass(frozen=True)
class Slice:
    """A TPU slice: its chip and its chip grid.

    Attributes:
      name: the Cloud name ("v5p-256") or, for a topology string, that string.
      chip: the chip's figures.
      shape: chips along each torus axis, e.g. (4, 4, 8).
    """

    name: str
    chip: Chip
    shape: tuple[int, ...]

    @property
    def chips(self) -> int:
        return math.prod(self.shape)

    @property
    def topology_name(self) -> str:
        """The string `jax.experimental.topologies.get_topology_desc` takes, e.g. "v5p:4x4x8"."""
        return f"{self.chip.jax_name}:{'x'.join(map(str, self.shape))}"

    @property
    def cloud_name(self) -> str:
        return f"{self.chip.name}-{self.chips * self.chip.cores_per_chip}"

    def devices(self):
        """Compile-only TPU devices of this slice (needs libtpu; nothing is allocated)."""
        from jax.experimental import topologies

        # Compile-only use never touches a TPU; without this, two processes loading libtpu at the
        # same time (two plans, or a plan next to a test) fail on libtpu's single-user lockfile.
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        kw = {}
        if self.chip.dims == 3:
            kw = dict(chip_config_name=self.chip.chip_config, chips_per_host_bounds=(2, 2, 1), num_slices=1,
                      wrap=(False, False, False))
        return topologies.get_topology_desc(topology_name=self.topology_name, platform="tpu", **kw).devices


def default_shape(chip: Chip, chips: int) -> tuple[int, ...]:
    """The usual grid of a slice of `chips` chips (Cloud TPU's standard shapes for powers of two).

    3-D slices grow from 2x2x1 by doubling the smallest axis (2x2x2, 2x2x4, 2x4x4, 4x4x4, 4x4x8, ...);
    2-D ones from 1x1, 2x2 as 2x4, 4x4, 4x8, 8x8, 8x16, 16x16. Other sizes need a topology string.
    """
    if chips < 1 or chips & (chips - 1):
        raise TopologyError(f"{chip.name} slice of {chips} chips: give its shape as a topology string, "
                            f"e.g. '{chip.jax_name}:4x4x12'")
    if chip.dims == 2:
        if chips == 1:
            return (1, 1)
        if chips == 2:
            return (1, 2)
        shape = [2, 2]
        while math.prod(shape) < chips:
            shape[shape.index(min(shape))] *= 2
        return tuple(sorted(shape))
    if chips < 4:
        raise TopologyError(f"the smallest {chip.name} slice has 4 chips ({chip.name}-{4 * chip.cores_per_chip})")
    if chips == 4:
        return (2, 2, 1)
    shape = [2, 2, 1]
    while math.prod(shape) < chips:
        i = min(range(3), key=lambda j: (shape[j], -j))  # the smallest axis, the last one on ties
        shape[i] *= 2
    return tuple(sorted(shape))


def parse_slice(name: str) -> Slice:
    """A slice from a Cloud name ("v5p-256", "v6e-8", "v5litepod-16") or a topology ("v5p:4x4x8")."""
    text = name.strip().lower()
    m = re.fullmatch(r"(v\d+[a-z]*)[:](\d+(?:x\d+)*)", text)
    if m:
        chip = _chip(m.group(1), name)
        shape = tuple(int(v) for v in m.group(2).split("x"))
        if len(shape) != chip.dims or min(shape) < 1:
            raise TopologyError(f"topology {name!r}: {chip.name} slices have {chip.dims} axes, e.g. "
                                f"'{chip.jax_name}:{'x'.join(['2'] * chip.dims)}'")
        return Slice(name, chip, shape)
    m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", text)
    if not m:
        raise TopologyError(f"unknown TPU slice {name!r}; expected a Cloud name such as v5p-256, v6e-8, "
                            f"v5litepod-16, v4-32, or a topology such as v5p:4x4x8")
    chip = _chip(m.group(1), name)
    n = int(m.group(2))
    if n % chip.cores_per_chip:
        raise TopologyError(f"{name!r}: {chip.name}-N counts TensorCores ({chip.cores_per_chip} per chip), "
                            f"so N must be a multiple of {chip.cores_per_chip}")
    chips = n // chip.cores_per_chip
    if not 1 <= chips <= chip.max_chips:
        raise TopologyError(f"{name!r}: a {chip.name} slice holds 1 to {chip.max_chips} chips, not {chips}")
    return Slice(name, chip, default_shape(chip, chips))


def _chip(prefix: str, name: str) -> Chip:
    key = _ALIASES.get(prefix, prefix)
    if key not in CHIPS:
        raise TopologyError(f"unknown TPU generation in {name!r}; known: v4, v5e (v5litepod), v5p, v6e")
    return CHIPS[key]


def slices_of(chip_name: str, min_chips: int = 1, max_chips: int | None = None) -> list[Slice]:
    """The power-of-two slices of a generation from `min_chips` up (smallest first)."""
    chip = _chip(chip_name, chip_name)
    top = min(chip.max_chips, max_chips or chip.max_chips)
    out, n = [], 4 if chip.dims == 3 else 1
    while n <= top:
        if n >= min_chips:
            out.append(Slice(f"{chip.name}-{n * chip.cores_per_chip}", chip, default_shape(chip, n)))
        n *= 2
    return out
