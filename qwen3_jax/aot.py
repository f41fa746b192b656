"""Compile for a TPU that is not there: ahead-of-time lowering against a TPU topology.

With `libtpu` installed (the `tpu` extra), `jax.experimental.topologies.get_topology_desc` describes
a TPU slice (for instance "v5p:2x2x1", four chips) whose abstract devices a mesh can be built on; a
function jitted with inputs given as `jax.ShapeDtypeStruct`s carrying shardings on that mesh is then
lowered and compiled by the real TPU compiler (Mosaic included, for Pallas kernels) on this machine.
Nothing runs; the compiled program reports its memory (`memory_analysis`) and cost
(`cost_analysis`) per chip.

Loading libtpu turns the process into one that knows about TPUs; tests therefore call
`run_isolated`, which compiles in a fresh interpreter, so the main test process stays CPU-only.

    from qwen3_jax.aot import compile_on_tpu, tpu_mesh
    mesh = tpu_mesh({"data": 4})
    x = jax.ShapeDtypeStruct((8, 4096), jnp.bfloat16, sharding=NamedSharding(mesh, P("data")))
    report = compile_on_tpu(lambda a: a * 2, x)
    report.memory["temp_size_in_bytes"], report.flops
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any, Callable, Mapping

import jax
import numpy as np

DEFAULT_TOPOLOGY = "v5p:2x2x1"
_MEMORY_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
                  "generated_code_size_in_bytes")


def tpu_devices(topology: str = DEFAULT_TOPOLOGY) -> list:
    """The abstract devices of a TPU topology such as "v5p:2x2x1" or a Cloud slice name such as
    "v5p-8" (needs libtpu; compile-only). Topologies are described once, in `plan.topology`."""
    from qwen3_jax.plan.topology import parse_slice

    try:
        return list(parse_slice(topology).devices())
    except Exception as e:  # no libtpu, or an unknown topology name
        raise RuntimeError(f"cannot describe TPU topology {topology!r} (is libtpu installed? "
                           f"pip install 'qwen3_jax[tpu]'): {e}") from e


def tpu_mesh(axes: Mapping[str, int] | None = None, topology: str = DEFAULT_TOPOLOGY,
             auto: bool = True) -> jax.sharding.Mesh:
    """A mesh over the devices of `topology`; `axes` maps names to sizes (default: all on "data").

    `auto` builds Auto axis types (what the project's Linen modules need); False gives Explicit.
    """
    devices = tpu_devices(topology)
    axes = dict(axes or {"data": len(devices)})
    n = int(np.prod(list(axes.values())))
    if n != len(devices):
        raise ValueError(f"mesh axes {axes} use {n} devices but topology {topology!r} has {len(devices)}")
    kind = jax.sharding.AxisType.Auto if auto else jax.sharding.AxisType.Explicit
    return jax.sharding.Mesh(np.array(devices).reshape(tuple(axes.values())), tuple(axes),
                             axis_types=(kind,) * len(axes))


@dataclasses.dataclass
class CompileReport:
    """What the TPU compiler says about one program (per chip).

    Attributes:
      memory: bytes of arguments, outputs, aliases, temporaries and generated code.
      flops: compiled FLOPs (XLA's count; a Pallas kernel contributes its declared cost estimate,
        and a loop body is counted once).
      bytes_accessed: XLA's count of bytes read and written.
      hlo: the optimised HLO text (to look for collectives or custom calls); empty when not asked.
      compiled: the `jax.stages.Compiled` object (not serialisable; None after `run_isolated`).
    """

    memory: dict
    flops: float
    bytes_accessed: float
    hlo: str = ""
    compiled: Any = None

    def to_dict(self) -> dict:
        return {"memory": self.memory, "flops": self.flops, "bytes_accessed": self.bytes_accessed, "hlo": self.hlo}


def summarize(compiled, with_hlo: bool = False) -> CompileReport:
    """A `CompileReport` of a `jax.stages.Compiled`."""
    mem = compiled.memory_analysis()
    memory = {f: int(getattr(mem, f, 0) or 0) for f in _MEMORY_FIELDS}
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per program
        cost = cost[0] if cost else {}
    return CompileReport(memory=memory, flops=float(cost.get("flops", 0.0)),
                         bytes_accessed=float(cost.get("bytes accessed", 0.0)),
                         hlo=compiled.as_text() if with_hlo else "", compiled=compiled)


def compile_on_tpu(fn: Callable, *args, static_argnums=(), with_hlo: bool = False, **jit_kwargs) -> CompileReport:
    """Lowers and compiles `jax.jit(fn)` for the TPU whose devices `args`' shardings name.

    Args:
      fn: the function.
      *args: `jax.ShapeDtypeStruct`s (with a `sharding` on a `tpu_mesh`) or pytrees of them; a
        struct without a sharding gets none (the compiler then places it on one device).
      static_argnums, **jit_kwargs: passed to `jax.jit` (e.g. `out_shardings`).
      with_hlo: keep the optimised HLO text in the report.
    """
    compiled = jax.jit(fn, static_argnums=static_argnums, **jit_kwargs).lower(*args).compile()
    return summarize(compiled, with_hlo)


def run_isolated(code: str, timeout: float = 900, env: Mapping[str, str] | None = None) -> dict:
    """Runs `code` in a fresh Python process and returns the JSON it prints on its last line.

    The code typically builds a `tpu_mesh`, calls `compile_on_tpu` and ends with
    `print(json.dumps(report.to_dict()))`. A failure raises RuntimeError with the child's output
    tail (the compiler's message: a Mosaic rejection names the offending block shape or op).
    """
    full_env = dict(os.environ)
    full_env.setdefault("TPU_SKIP_MDS_QUERY", "1")
    full_env.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # see `tpu_devices`
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=full_env)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-6000:]).strip()
        raise RuntimeError(f"isolated TPU compile failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])
