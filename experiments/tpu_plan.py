"""The TPU plan of every released Qwen3 model, compiled ahead of time for slices that are not here.

    python experiments/tpu_plan.py [--models Qwen3-0.6B,...] [--tasks train,serve] [--top 2] [--fresh]

For each of the 8 presets:
* training at sequence 4,096 with a global batch of 256 rows (1,048,576 tokens per step) on the
  smallest v5p slice where the plan finds a mesh that fits (slices tried from the smallest the
  analytic guess allows, or from --min-chips, upwards); MoE layers with an expert-parallel
  capacity factor of 1.25 (each chip receives at most 1.25 x its tokens x top-k routed rows; the
  dropless worst case is expert-axis-size times larger);
* serving, prefill of 64 prompts of 32,768 tokens and decode of those 64 rows (512 new tokens), on
  the smallest v6e slice that fits.
Every figure comes from the compiled programs (`qwen3_jax.plan`): per-chip HBM split, mesh,
model FLOPs, collectives, compile time. Results are saved after each model (the run resumes where
it stopped unless --fresh) to experiments/results/tpu_plan.json, with a table in tpu_plan.md and a
plot of the per-chip memory in tpu_plan.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qwen3_jax.plan import search  # noqa: E402
from qwen3_jax.plan.topology import slices_of  # noqa: E402
from qwen3_jax.presets import RELEASED, get_preset  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SETTINGS = {"train": dict(generation="v5p", seq=4096, batch=256, capacity_factor=1.25, attention_impl="auto"),
            "serve": dict(generation="v6e", seq=32768, batch=64, new_tokens=512, attention_impl="auto")}
GiB = 2**30


def first_slices(cfg, task: str, count: int = 3, min_chips: int = 1):
    """The smallest slices of the task's generation where some mesh is guessed to fit (and the next ones)."""
    s = SETTINGS[task]
    cache_len = None
    if task == "serve":
        from qwen3_jax.generate.engine import bucket
        cache_len = bucket(bucket(s["seq"]) + s["new_tokens"])
    out = []
    for sl in slices_of(s["generation"], min_chips=min_chips):
        if not out:
            ok = any(c.reason is None and c.guess["bytes"] <= search.GUESS_MARGIN * sl.chip.hbm_bytes
                     for c in (search.screen(cfg, sl, m, task, s["seq"], s["batch"], None, cache_len)
                               for m in search.candidate_meshes(cfg, sl.chips)))
            if not ok:
                continue
        out.append(sl)
        if len(out) == count:
            break
    return out


def plan_model(name: str, task: str, top: int, log, save=None, tried=None, min_chips: int = 1) -> dict:
    """Plans `name` on the task's slices, smallest first, until one fits (slices in `tried` that did
    not fit in an earlier run are not compiled again)."""
    cfg = get_preset(name)
    s = SETTINGS[task]
    tried = list(tried or [])
    done = {t["topology"] for t in tried if not t["fits"]}
    r = None
    for sl in first_slices(cfg, task, count=3 + len(done), min_chips=min_chips):
        if sl.cloud_name in done:
            continue
        t0 = time.perf_counter()
        r = search.plan(cfg, name, sl, task, s["seq"], s["batch"], top=top, new_tokens=s.get("new_tokens", 512),
                        capacity_factor=s.get("capacity_factor") if cfg.is_moe else None,
                        attention_impl=s["attention_impl"])
        log(f"{name} {task} on {sl.cloud_name}: fits={r['fits']} mesh={r.get('mesh')} "
            f"({time.perf_counter() - t0:.0f} s)")
        tried.append({"topology": sl.cloud_name, "fits": r["fits"],
                      "candidates": [c for c in r["candidates"] if c.get("bytes_per_chip") or c.get("chosen")]})
        if save is not None:  # keep what a long run has compiled so far
            save(dict(r, slices_tried=tried))
        if r["fits"]:
            r["slices_tried"] = tried
            return r
    r["slices_tried"] = tried
    return r


def _write(path: str, text: str) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def table(results: dict) -> str:
    rows = ["| model | task | slice (chips) | mesh | attention | micro-batches | MoE capacity | per chip: total / HBM | params | optimizer | "
            "activations+temp | KV cache | headroom | model TFLOP/step | est. step (s) | collectives (GiB/step/chip) "
            "| compile (s) |", "|" + "---|" * 17]
    for key in sorted(results, key=lambda k: (results[k]["task"], RELEASED.index(results[k]["model"]))):
        r = results[key]
        b = r.get("bytes_per_chip")
        if not b:  # nothing compiled that fits or not: listed below the table
            continue
        coll = ", ".join(f"{op} {v['bytes'] / GiB:.2f}" for op, v in sorted(r.get("collectives", {}).items()))
        head = (f"{r['headroom_bytes'] / GiB:.1f} GiB ({100 * r['headroom_bytes'] / r['hbm_bytes_per_chip']:.0f}%)"
                if r.get("fits") else "does not fit")
        mesh = ",".join(f"{a}={v}" for a, v in (r.get("mesh") or {}).items())
        g = lambda k: f"{b.get(k, 0) / GiB:.1f}"  # noqa: E731
        cap = (r.get("capacity_factor") or "dropless") if get_preset(r["model"]).is_moe and r["task"] == "train" else "-"
        rows.append(
            f"| {r['model']} | {r['task']} | {r['topology']} ({r['chips']}) | {mesh} | {r.get('attention_impl') or 'xla'} | "
            f"{r.get('microbatches') or '-'} | {cap} | "
            f"{g('total')} / {r['hbm_bytes_per_chip'] / GiB:.1f} GiB | {g('params')} | {g('optimizer_state')} | "
            f"{g('activations_temporaries')} | {g('kv_cache')} | {head} | "
            f"{(r.get('model_flops_per_step') or 0) / 1e12:,.0f} | {r.get('estimated_step_seconds') or 0:.3g} | "
            f"{coll} | {r.get('compile_seconds') or 0:.0f} |")
    return "\n".join(rows)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=False)
    parts = [("params", "params"), ("optimizer_state", "optimizer state"),
             ("activations_temporaries", "activations + temporaries"), ("kv_cache", "KV cache"), ("other", "other")]
    for ax, task in zip(axes, ("train", "serve")):
        rs = sorted((r for r in results.values() if r["task"] == task and r.get("bytes_per_chip")),
                    key=lambda r: RELEASED.index(r["model"]))
        labels = [f"{r['model'].replace('Qwen3-', '')}\n{r['topology']}" for r in rs]
        bottom = [0.0] * len(rs)
        for key, name in parts:
            vals = [r["bytes_per_chip"][key] / GiB for r in rs]
            ax.bar(labels, vals, bottom=bottom, label=name)
            bottom = [a + b for a, b in zip(bottom, vals)]
        if rs:
            ax.axhline(rs[0]["hbm_bytes_per_chip"] / GiB, color="k", ls="--", lw=1, label="HBM per chip")
        s = SETTINGS[task]
        ax.set_title(f"{task}: " + (f"seq {s['seq']}, batch {s['batch']} on v5p" if task == "train"
                                    else f"prefill {s['batch']}x{s['seq']}, decode {s['batch']} rows on v6e"))
        ax.set_ylabel("GiB per chip (compiled)")
        ax.tick_params(axis="x", labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(RELEASED))
    ap.add_argument("--tasks", default="train,serve")
    ap.add_argument("--top", type=int, default=1, help="candidates compiled per slice")
    ap.add_argument("--fresh", action="store_true", help="recompute results already saved")
    ap.add_argument("--report-only", action="store_true", help="rewrite the table and plot from the saved JSON")
    ap.add_argument("--min-chips", type=int, default=1, help="skip slices with fewer chips")
    ap.add_argument("--merge", default="", help="comma-separated JSON files of other runs to merge in first")
    args = ap.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "tpu_plan.json")
    saved = {}
    if os.path.exists(path) and not args.fresh:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f).get("results", {})
    for other in filter(None, args.merge.split(",")):
        with open(other, encoding="utf-8") as f:
            for key, r in json.load(f)["results"].items():
                if r.get("fits") or key not in saved:
                    saved[key] = r
    from tqdm import tqdm

    jobs = [] if args.report_only else [(m, t) for t in filter(None, args.tasks.split(",")) for m in args.models.split(",")]
    bar = tqdm(jobs, desc="tpu plan", unit="model")
    for model, task in bar:
        key = f"{model}/{task}"
        if key in saved and saved[key].get("settings") == SETTINGS[task] and saved[key].get("fits"):
            continue
        bar.set_postfix_str(key)
        def save(r, key=key, task=task):
            saved[key] = dict(r, settings=SETTINGS[task])
            _write(path, json.dumps({"settings": SETTINGS, "results": saved}, indent=1))

        # slices that did not fit are skipped only when they were compiled with these settings
        same = saved.get(key, {}).get("settings") == SETTINGS[task]
        r = plan_model(model, task, args.top, bar.write, save,
                       tried=saved[key].get("slices_tried") if same else None, min_chips=args.min_chips)
        save(r)
    _write(path, json.dumps({"settings": SETTINGS, "results": saved}, indent=1))
    md = ["# TPU plan: every Qwen3 model compiled for Cloud TPU slices (ahead of time, libtpu)", "",
          "Generated by `python experiments/tpu_plan.py`. Every figure is from the compiled programs: per-chip "
          "memory is XLA's (arguments + outputs - donated + temporaries), split by the shards of params, optimizer "
          "state and KV cache; collectives are counted in the compiled HLO (loop trips included); model FLOPs are "
          "counted from the architecture. Training: global batch 256 x 4,096 = 1,048,576 tokens per step, bfloat16 "
          "compute, float32 master weights and AdamW state, full remat; MoE layers with the expert-parallel capacity "
          "in the table (`model.moe_capacity_factor` of the trainer: 1.25 in the current settings, each chip "
          "receiving at most 1.25 x its tokens x top-k routed rows; dropless reserves the worst case, expert-axis "
          "times more). Serving: the engine's prefill of 64 prompts "
          "of 32,768 tokens and its decode loop over their cache. Attention: the model's `attention_impl=\"auto\"`, "
          "which on TPU is the project's Pallas flash kernels (rows compiled before they existed say xla). HBM per chip: v5p 95 GB, v6e 32 GB (Cloud TPU "
          "docs; XLA:TPU itself allows 95.74 GiB on v5p, so the v5p verdicts here are conservative). "
          "Collective bytes are the sizes of the buffers each instruction moves, per chip and step; for "
          "ragged-all-to-all that is the dropless worst-case receive buffer, an upper bound on what is sent.", "",
          table(saved), ""]
    missing = [f"{m} {t}" for t in SETTINGS for m in RELEASED if f"{m}/{t}" not in saved]
    if missing:
        md += [f"Not compiled yet (rerun the script; it resumes): {', '.join(missing)}.", ""]
    for key, r in sorted(saved.items()):
        for t in r.get("slices_tried", []):
            if not t["fits"]:
                why = [c for c in t.get("reasons", []) + [c.get("reason") or "" for c in t.get("candidates", [])]
                       if c.startswith("does not fit")]
                md.append(f"* {key} on {t['topology']}: " + (f"no compiled mesh fits ({'; '.join(why)})" if why
                                                              else "not finished (compile interrupted)"))
    md += ["", "![per-chip memory](tpu_plan.png)", ""]
    _write(os.path.join(RESULTS, "tpu_plan.md"), "\n".join(md))
    plot(saved, os.path.join(RESULTS, "tpu_plan.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
