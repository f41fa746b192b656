"""The plan as text: memory against HBM, mesh, FLOPs, collectives, candidates."""

from __future__ import annotations

GiB = 2**30
_PART_NAMES = {"params": "params", "optimizer_state": "optimizer state", "kv_cache": "KV cache",
               "activations_temporaries": "activations + temporaries", "other": "other (batch, outputs, code)"}


def _g(b) -> str:
    return "-" if b is None else f"{b / GiB:.2f} GiB"


def _mesh(m) -> str:
    return ",".join(f"{a}={s}" for a, s in m.items()) if m else "-"


def format_plan(r: dict) -> str:
    lines = []
    task = r.get("task")
    what = (f"train, batch {r['batch']} x seq {r['seq']} = {r['batch'] * r['seq']:,} tokens/step, remat "
            f"{r.get('remat')}, {r.get('microbatches')} micro-batch(es)" if task == "train"
            else f"serve, prefill {r['batch']} x {r['seq']} tokens, decode {r['batch']} rows over a "
                 f"{r.get('cache_length', '?')}-slot cache")
    lines.append(f"{r['model']} on {r['topology']} ({r.get('topology_shape')}, {r['chips']} chips): {what}")
    lines.append(f"mesh: {_mesh(r.get('mesh'))}" + (f", attention {r['attention_impl']}" if r.get("attention_impl") else ""))
    hbm = r["hbm_bytes_per_chip"]
    b = r.get("bytes_per_chip")
    if b:
        verdict = "FITS" if r["fits"] else "DOES NOT FIT"
        lines.append(f"per-chip HBM: {_g(b['total'])} of {_g(hbm)} -> {verdict}"
                     + (f" ({_g(hbm - b['total'])} free, {100 * (hbm - b['total']) / hbm:.0f}%)" if r["fits"] else ""))
        for k, name in _PART_NAMES.items():
            if b.get(k):
                lines.append(f"  {name:<30} {_g(b[k])}")
    else:
        lines.append(f"per-chip HBM: {_g(hbm)}; DOES NOT FIT")
    for p in r.get("programs", []):
        if p.get("compiled"):
            lines.append(f"  [{p['name']}] {_g(p['bytes_per_chip']['total'])} per chip, compiled in "
                         f"{p['compile_seconds']:.1f} s")
        else:
            lines.append(f"  [{p['name']}] not compiled: {p.get('error')}")
    if r.get("model_flops_per_step"):
        lines.append(f"model FLOPs: {r['model_flops_per_step']:.3e} per step, {r['model_flops_per_chip']:.3e} "
                     f"per chip; estimated step {r.get('estimated_step_seconds') or 0:.3g} s "
                     f"(FLOPs at peak + collective bytes over ICI)")
    if r.get("collectives"):
        lines.append("collectives per step (instructions / runs / bytes per chip):")
        for op, v in sorted(r["collectives"].items()):
            lines.append(f"  {op:<20} {v['count']:>5} {v['executed']:>6}  {_g(v['bytes'])}")
    if r.get("compile_seconds") is not None:
        lines.append(f"compile time: {r['compile_seconds']:.1f} s")
    cands = r.get("candidates") or []
    if len(cands) > 1 or (cands and not cands[0].get("chosen")):
        lines.append("candidates:")
        for c in cands:
            mark = "*" if c.get("chosen") else " "
            mb = f" x{c['microbatches']} mb" if c.get("microbatches") else ""
            lines.append(f" {mark} {_mesh(c['mesh']):<36}{mb:<9} {c.get('reason') or 'chosen'}")
    if not r["fits"]:
        lines.append("no mesh fits this request on this slice.")
        for s in r.get("suggestions", []):
            lines.append(f"  suggestion: {s}")
    return "\n".join(lines)
