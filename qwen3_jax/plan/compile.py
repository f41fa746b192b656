"""Compile a step for a TPU slice and measure it: per-chip memory, collectives, FLOPs, compile time.

`plan_one` is what the worker process runs for one (model, slice, mesh, task) request. The memory
of a program per chip is what XLA reports for the compiled program (`memory_analysis`):
arguments + outputs - outputs aliased to donated arguments + temporaries. It is split into the
params, the optimizer state and the KV cache (the bytes of their shards on one chip, from their
shardings), the activations and temporaries (XLA's temporary buffers), and the rest (batch,
un-donated outputs such as the new cache of a prefill when it is not an input, generated code).
"""

from __future__ import annotations

import math
import re
import time

import jax
import numpy as np

from qwen3_jax.config import Qwen3Config
from qwen3_jax.plan import flops as flops_mod
from qwen3_jax.plan import hlo
from qwen3_jax.plan.topology import Slice

PARTS = ("params", "optimizer_state", "kv_cache", "activations_temporaries", "other")


def shard_bytes(tree) -> int:
    """Bytes one chip holds of a tree of sharded ShapeDtypeStructs (the largest shard of each leaf)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def _oom_bytes(message: str) -> int | None:
    """The bytes a program needed, from XLA:TPU's out-of-memory compile error, when it says."""
    m = re.search(r"Used ([\d.]+)([KMGT]?)(i?B)? of", message)
    if not m:
        return None
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2)]
    return int(float(m.group(1)) * scale)


def measure(program) -> dict:
    """Lowers and compiles one `steps.Program`; returns its memory split, collectives and timing."""
    t0 = time.perf_counter()
    try:
        compiled = getattr(program, "compiled", None)
        if compiled is None:
            compiled = (getattr(program, "lowered", None) or program.lower()).compile()
    except Exception as e:  # XLA reports an out-of-HBM program as a compile error
        msg = str(e)
        if "RESOURCE_EXHAUSTED" not in msg and "memory" not in msg.lower():
            raise
        return {"name": program.name, "compiled": False, "error": msg.strip().splitlines()[0][:500],
                "needed_bytes": _oom_bytes(msg), "compile_seconds": time.perf_counter() - t0}
    seconds = getattr(program, "compile_seconds", None) or time.perf_counter() - t0
    mem = compiled.memory_analysis()
    total = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
             + mem.temp_size_in_bytes + mem.generated_code_size_in_bytes)
    parts = {"params": shard_bytes(program.parts.get("params", {})),
             "optimizer_state": shard_bytes(program.parts.get("optimizer_state", {})),
             "kv_cache": shard_bytes(program.parts.get("kv_cache", program.parts.get("kv_cache_out", {}))),
             "activations_temporaries": int(mem.temp_size_in_bytes)}
    parts["other"] = int(total - sum(parts.values()))
    coll = hlo.collectives(compiled.as_text())
    return {"name": program.name, "compiled": True, "compile_seconds": seconds,
            "bytes_per_chip": {"total": int(total), **parts},
            "xla_memory": {"arguments": mem.argument_size_in_bytes, "outputs": mem.output_size_in_bytes,
                           "aliased": mem.alias_size_in_bytes, "temporaries": mem.temp_size_in_bytes,
                           "code": mem.generated_code_size_in_bytes},
            "collectives": coll["ops"], "unknown_loops": len(coll["unknown_loops"]),
            "_hlo": compiled.as_text() if getattr(program, "keep_hlo", False) else None}


def _split_mesh(sizes: dict[str, int], devices):
    """A mesh whose logical axes may split the slice's physical axes (jax.make_mesh refuses those)."""
    from jax.experimental import mesh_utils
    from jax.sharding import AxisType, Mesh

    from qwen3_jax.sharding.rules import MESH_AXES

    names = tuple(a for a in MESH_AXES if a in sizes)
    shape = tuple(sizes[a] for a in names)
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    return Mesh(grid, names, axis_types=(AxisType.Auto,) * len(names))


def step_flops(cfg: Qwen3Config, task: str, batch: int, seq: int, cache_len: int | None = None) -> dict:
    """Model FLOPs per program: {"train_step": ...} or {"prefill": ..., "decode": ... (one token step)}."""
    if task == "train":
        return {"train_step": flops_mod.train_flops(cfg, batch, seq)}
    return {"prefill": flops_mod.forward_flops(cfg, batch, seq),
            "decode": flops_mod.forward_flops(cfg, batch, 1, context=cache_len or seq)}


def _resolved_attention(impl: str, mesh, cfg: Qwen3Config) -> str:
    """The attention implementation the compiled programs use ("auto" resolved for the slice's mesh)."""
    from qwen3_jax.model.attention_impl import resolve

    return resolve(impl, mesh, cfg.dual_chunk_attention_config is not None)[0]


def plan_one(cfg: Qwen3Config, slice_: Slice, mesh_sizes: dict[str, int], task: str, seq: int, batch: int,
             remat: str = "full", microbatches: int = 1, new_tokens: int = 512, devices=None,
             keep_hlo: bool = False, capacity_factor: float | None = None, attention_impl: str = "auto") -> dict:
    """Compiles the task's programs for `slice_` under `mesh_sizes` and reports what the plan prints.

    Returns the plan's JSON object (see `qwen3_jax.cli.plan`): fits, mesh, chips, hbm_bytes_per_chip,
    bytes_per_chip (the largest program's), model_flops_per_step, collectives (summed over the
    programs), compile_seconds, and per-program details under "programs".
    """
    from qwen3_jax.plan import steps
    from qwen3_jax.sharding.mesh import make_mesh
    from qwen3_jax.sharding.rules import mesh_axis_sizes

    devices = slice_.devices() if devices is None else devices
    try:
        mesh = make_mesh(dict(mesh_sizes), devices=devices)
    except NotImplementedError:  # the axes split a physical torus axis (e.g. 8x4x2 over 4x4x4)
        mesh = _split_mesh(dict(mesh_sizes), devices)
    sizes = mesh_axis_sizes(mesh)
    t0 = time.perf_counter()
    if task == "train":
        programs = steps.train_program(cfg, mesh, batch, seq, remat, microbatches, capacity_factor, attention_impl)
        cache_len = None
    elif task == "serve":
        programs = steps.serve_programs(cfg, mesh, batch, seq, new_tokens, attention_impl=attention_impl)
        cache_len = programs[1].args[2]["cache"]
        cache_len = jax.tree.leaves(cache_len)[0].shape[-2]
    else:
        raise ValueError(f"unknown task {task!r}; expected 'train' or 'serve'")
    for p in programs:
        p.keep_hlo = keep_hlo
    results = [measure(p) for p in programs]
    flops = step_flops(cfg, task, batch, seq, cache_len)
    chip = slice_.chip
    hbm = chip.hbm_bytes
    ok = [r for r in results if r["compiled"]]
    fits = len(ok) == len(results) and all(r["bytes_per_chip"]["total"] <= hbm for r in ok)
    worst = max(ok, key=lambda r: r["bytes_per_chip"]["total"]) if ok else None
    coll: dict[str, dict] = {}
    for r in ok:
        for op, v in r["collectives"].items():
            e = coll.setdefault(op, {"count": 0, "executed": 0, "bytes": 0})
            for k in e:
                e[k] += v[k]
    total_flops = sum(flops.values())
    est = 0.0
    for r in ok:
        f = flops.get(r["name"], 0.0)
        comm = sum(v["bytes"] for v in r["collectives"].values())
        est += f / slice_.chips / chip.peak_bf16_flops + (comm / chip.ici_bytes_per_s if chip.ici_bytes_per_s else 0.0)
    out = {
        "model": cfg.name, "task": task, "topology": slice_.name, "topology_shape": slice_.topology_name,
        "chips": slice_.chips, "mesh": sizes, "seq": seq, "batch": batch,
        "tokens_per_step": batch * seq if task == "train" else batch * seq,
        "remat": remat if task == "train" else None, "microbatches": microbatches if task == "train" else None,
        "capacity_factor": capacity_factor if task == "train" and cfg.is_moe else None,
        "attention_impl": _resolved_attention(attention_impl, mesh, cfg),
        "fits": bool(fits), "hbm_bytes_per_chip": hbm,
        "bytes_per_chip": worst["bytes_per_chip"] if worst else None,
        "headroom_bytes": hbm - worst["bytes_per_chip"]["total"] if worst and len(ok) == len(results) else None,
        "model_flops_per_step": total_flops, "model_flops_per_chip": total_flops / slice_.chips,
        "model_flops_by_program": flops,
        "peak_bf16_flops_per_chip": chip.peak_bf16_flops,
        "estimated_step_seconds": est if ok else None,
        "collectives": coll,
        "compile_seconds": time.perf_counter() - t0,
        "programs": results,
    }
    if task == "serve":
        out["cache_length"] = cache_len
    failed = [r for r in results if not r["compiled"]]
    if failed:
        out["error"] = "; ".join(f"{r['name']}: {r['error']}" for r in failed)
    return out
