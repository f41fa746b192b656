"""The plan: pick a mesh for a slice, compile it in a worker process, say whether it fits.

Without a mesh, every assignment of the slice's chips to the axes data × fsdp × expert × tensor is
a candidate. Candidates the model or batch rule out (an `expert` size that does not divide the
experts, a `tensor` size that does not divide the heads, rows that do not split over the batch
axes, params and optimizer state alone above the HBM) are rejected with that reason; the rest are
ranked by the analytic guess of `estimate.py` (step time, among those guessed to fit), and the best
`top` are compiled. The chosen mesh is the compiled candidate that fits with the lowest estimated
step time (model FLOPs at peak plus the compiled program's collective bytes over the chip's
inter-chip bandwidth). For training, each candidate gets the fewest gradient-accumulation
micro-batches whose guessed memory fits (unless `microbatches` is given).

The v4 page gives no per-chip inter-chip bandwidth; for v4 the ranking uses 300 GB/s, a placeholder
that orders candidates only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile

from qwen3_jax.config import Qwen3Config
from qwen3_jax.plan import estimate
from qwen3_jax.plan.topology import Slice, slices_of
from qwen3_jax.plan.worker import RESULT_PREFIX

AXES = ("data", "fsdp", "expert", "tensor")
GUESS_MARGIN = 0.85  # a candidate whose guessed memory exceeds this share of HBM is ranked after the others
FALLBACK_COMPILES = 2  # next-ranked candidates compiled, one by one, when none of the top ones fits


@dataclasses.dataclass
class Candidate:
    mesh: dict[str, int]
    microbatches: int = 1
    guess: dict | None = None
    reason: str | None = None  # why it was rejected (None: still in the running)
    result: dict | None = None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _pow2_upto(n: int) -> list[int]:
    out, v = [], 1
    while v <= n:
        out.append(v)
        v *= 2
    return out


def candidate_meshes(cfg: Qwen3Config, chips: int) -> list[dict[str, int]]:
    """Every data × fsdp × expert × tensor assignment of `chips` (expert only for MoE, tensor <= 8)."""
    out = []
    for t in [v for v in _pow2_upto(min(8, chips)) if chips % v == 0]:
        for e in ([v for v in _pow2_upto(chips // t) if (chips // t) % v == 0] if cfg.is_moe else [1]):
            rest = chips // (t * e)
            for f in _divisors(rest):
                out.append({"data": rest // f, "fsdp": f, "expert": e, "tensor": t})
    return out


def _microbatch_choices(batch: int, shards: int) -> list[int]:
    per = batch // shards if batch % shards == 0 else 0
    return [m for m in _divisors(batch) if per and per % m == 0] if per else []


def screen(cfg: Qwen3Config, slice_: Slice, mesh: dict[str, int], task: str, seq: int, batch: int,
           microbatches: int | None, cache_len: int | None) -> Candidate:
    """The model and batch rules, then the analytic guess, for one mesh."""
    c = Candidate({a: s for a, s in mesh.items() if s > 1} or {"data": 1})
    e, t = mesh.get("expert", 1), mesh.get("tensor", 1)
    shards = estimate.batch_shards(mesh)
    if e > 1 and (not cfg.is_moe or cfg.num_experts % e):
        c.reason = (f"expert={e} does not divide the {cfg.num_experts} experts" if cfg.is_moe
                    else f"expert={e} on a dense model")
        return c
    if cfg.num_attention_heads % t:
        c.reason = f"tensor={t} does not divide the {cfg.num_attention_heads} attention heads"
        return c
    if batch % shards:
        c.reason = f"batch={batch} rows do not split over data×fsdp×expert={shards}"
        return c
    hbm = slice_.chip.hbm_bytes
    state = estimate.state_bytes(cfg, mesh, task)
    if state > hbm:
        c.reason = (f"{'params+optimizer state' if task == 'train' else 'params'} alone need "
                    f"{state / 2**30:.1f} GiB per chip (guess) > {hbm / 2**30:.1f} GiB HBM")
        return c
    if task == "train":
        choices = [microbatches] if microbatches else _microbatch_choices(batch, shards)
        if microbatches and (batch // shards) % microbatches:
            c.reason = f"batch={batch} rows per data×fsdp×expert={shards} shard do not split into {microbatches} micro-batches"
            return c
        for m in choices:
            g = estimate.guess(cfg, mesh, slice_.chip, slice_.chips, task, seq, batch, m)
            c.microbatches, c.guess = m, g
            if g["bytes"] <= GUESS_MARGIN * hbm:
                break
    else:
        c.guess = estimate.guess(cfg, mesh, slice_.chip, slice_.chips, task, seq, batch, cache_len=cache_len)
    return c


def run_worker(requests: list[dict], timeout: float | None = None, progress=None) -> list[dict]:
    """Compiles `requests` in a fresh `python -m qwen3_jax.plan.worker` process; one result per request."""
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), env.get("PYTHONPATH")) if p)
    results = []
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "qwen3_jax.plan.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        try:
            proc.stdin.write(json.dumps(requests))
            proc.stdin.close()
            for line in proc.stdout:
                if line.startswith(RESULT_PREFIX):
                    results.append(json.loads(line[len(RESULT_PREFIX):]))
                    if progress is not None:
                        progress(results[-1])
            proc.wait(timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if len(results) < len(requests):
            err.seek(0)
            tail = err.read()[-2000:]
            for req in requests[len(results):]:
                results.append({"error": f"the compile worker exited ({proc.returncode}) before this request: "
                                         f"{tail.strip().splitlines()[-1] if tail.strip() else 'no output'}",
                                "request": req})
    return results


def plan(cfg: Qwen3Config, model: str, slice_: Slice, task: str, seq: int, batch: int, mesh: dict | None = None,
         remat: str = "full", microbatches: int | None = None, new_tokens: int = 512, top: int = 3,
         progress=None, capacity_factor: float | None = None, attention_impl: str = "auto") -> dict:
    """Runs the plan: screens the candidate meshes (or the given one), compiles the best, chooses.

    Returns the chosen candidate's compiled result (see `compile.plan_one`) with "candidates" (every
    mesh tried or rejected, with its reason) and, when nothing fits, "suggestions".
    """
    cache_len = None
    if task == "serve":
        from qwen3_jax.generate.engine import bucket
        cache_len = bucket(bucket(seq) + new_tokens)
    meshes = [mesh] if mesh else candidate_meshes(cfg, slice_.chips)
    cands = [screen(cfg, slice_, m, task, seq, batch, microbatches, cache_len) for m in meshes]
    live = [c for c in cands if c.reason is None]
    hbm = slice_.chip.hbm_bytes
    live.sort(key=lambda c: (c.guess["bytes"] > GUESS_MARGIN * hbm, c.guess["seconds"]))
    # Compile the best `top`; when none of them fits (the analytic guess is rough), the next-ranked
    # candidates one by one, at most FALLBACK_COMPILES more, before the slice is given up.
    chosen_to_compile, waiting = [], list(live)
    limit = len(live) if mesh else top + FALLBACK_COMPILES
    while waiting and len(chosen_to_compile) < limit and not any(
            c.result and c.result.get("fits") for c in chosen_to_compile):
        n = len(waiting) if mesh else (top if not chosen_to_compile else 1)
        round_, waiting = waiting[:n], waiting[n:]
        requests = [dict(model=model, topology=slice_.name if ":" not in slice_.name else slice_.topology_name,
                         mesh=c.mesh, task=task, seq=seq, batch=batch, remat=remat, microbatches=c.microbatches,
                         new_tokens=new_tokens, capacity_factor=capacity_factor,
                         attention_impl=attention_impl) for c in round_]
        for c, r in zip(round_, run_worker(requests, progress=progress)):
            c.result = r
            if "fits" not in r:
                c.reason = f"compile failed: {r.get('error')}"
            elif not r["fits"]:
                failed = [p for p in r["programs"] if p.get("compiled") is False]
                # a program that ran out of memory: its need (or its error), not the others' bytes
                need = (max((p.get("needed_bytes") or 0 for p in failed), default=0) if failed
                        else (r["bytes_per_chip"] or {}).get("total") or 0)
                c.reason = (f"does not fit: {need / 2**30:.1f} GiB per chip > {hbm / 2**30:.1f} GiB HBM" if need
                            else f"does not fit: {r.get('error', 'out of memory')}")
        chosen_to_compile += round_
    for c in waiting:
        c.reason = (f"not compiled: ranked below the {len(chosen_to_compile)} compiled by the analytic guess "
                    f"({c.guess['seconds']:.3g} s/step, {c.guess['bytes'] / 2**30:.1f} GiB per chip)")
    fitting = [c for c in chosen_to_compile if c.result and c.result.get("fits")]
    best = min(fitting, key=lambda c: c.result["estimated_step_seconds"]) if fitting else None
    for c in fitting:
        if c is not best:
            c.reason = (f"fits, but slower: {c.result['estimated_step_seconds']:.3g} s/step estimated against "
                        f"{best.result['estimated_step_seconds']:.3g}")
    summary = [{"mesh": c.mesh, "microbatches": c.microbatches if task == "train" else None,
                "chosen": c is best, "reason": c.reason,
                "bytes_per_chip": (c.result or {}).get("bytes_per_chip", {}) and c.result["bytes_per_chip"].get("total"),
                "guess_bytes_per_chip": c.guess and c.guess["bytes"],
                "estimated_step_seconds": (c.result or {}).get("estimated_step_seconds")} for c in cands]
    if best is not None:
        out = dict(best.result)
    else:
        tried = next((c.result for c in chosen_to_compile if c.result and "fits" in c.result), None)
        out = dict(tried) if tried else {
            "model": cfg.name, "task": task, "topology": slice_.name, "topology_shape": slice_.topology_name,
            "chips": slice_.chips, "mesh": None, "seq": seq, "batch": batch, "hbm_bytes_per_chip": hbm,
            "bytes_per_chip": None, "model_flops_per_step": None, "collectives": {},
            "remat": remat if task == "train" else None, "microbatches": microbatches if task == "train" else None}
        out["fits"] = False
        out["suggestions"] = suggest(cfg, slice_, task, seq, batch, cache_len)
    out.pop("request", None)
    out["candidates"] = summary
    return out


def suggest(cfg: Qwen3Config, slice_: Slice, task: str, seq: int, batch: int, cache_len: int | None) -> list[str]:
    """What might fit instead (analytic guesses, to be checked with another plan run)."""
    out = []
    order = [slice_.chip.name] + [n for n in ("v5p", "v6e", "v4", "v5e") if n != slice_.chip.name]
    for gen in order:
        start = slice_.chips * 2 if gen == slice_.chip.name else 1
        found = None
        for bigger in slices_of(gen, min_chips=start):
            found = next((c for c in (screen(cfg, bigger, m, task, seq, batch, None, cache_len)
                                      for m in candidate_meshes(cfg, bigger.chips))
                          if c.reason is None and c.guess["bytes"] <= GUESS_MARGIN * bigger.chip.hbm_bytes), None)
            if found is not None:
                out.append(f"a larger slice: {bigger.cloud_name} ({bigger.chips} chips) with mesh "
                           f"{_fmt(found.mesh)} (guessed {found.guess['bytes'] / 2**30:.1f} GiB per chip)")
                break
        if found is not None:
            break
    smaller = batch // 2
    while smaller >= 1:
        fit = next((c for c in (screen(cfg, slice_, m, task, seq, smaller, None, cache_len)
                                for m in candidate_meshes(cfg, slice_.chips))
                    if c.reason is None and c.guess["bytes"] <= GUESS_MARGIN * slice_.chip.hbm_bytes), None)
        if fit is not None:
            out.append(f"a smaller batch on {slice_.name}: --batch {smaller} with mesh {_fmt(fit.mesh)}")
            break
        smaller //= 2
    if not out:
        out.append("no slice of any generation is guessed to fit; try a shorter --seq or a smaller --batch")
    return out


def _fmt(mesh: dict[str, int]) -> str:
    return ",".join(f"{a}={s}" for a, s in mesh.items())
