"""Peak memory of `qwen3-jax convert`: bounded by the largest stacked param, not the model.

Writes a random dense Qwen3 checkpoint with NumPy (no torch; float32, several safetensors
files), runs the converter on it as a child process, and records the child's resident set size
over time (polling /proc/PID/status) and its peak (`getrusage(RUSAGE_CHILDREN).ru_maxrss`).
The same is done first for a tiny checkpoint, whose peak is the fixed cost of the process
(Python, JAX, Orbax, TensorStore).

The bound under test: peak <= 2 x largest stacked param + 1 GiB. A converter that held the
whole model would exceed it (the full run's model is about 2.1 GB against a bound of about
1.4 GiB), and the tighter check `peak - tiny peak <= 2 x largest` shows where the memory goes.
Unless `--no-export`, the converted directory is then exported back to safetensors and that
peak is recorded too (informational; no bound is asserted for it).

    python experiments/bench_convert_memory.py                # ~2.1 GB model, results in experiments/results
    python experiments/bench_convert_memory.py --size small   # ~0.66 GB, used by the slow test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from qwen3_jax.checkpoint.hf_mapping import param_shapes  # noqa: E402
from qwen3_jax.checkpoint.safetensors_write import write_random_hf_checkpoint  # noqa: E402
from qwen3_jax.config import Qwen3Config  # noqa: E402

GiB, MiB = 2**30, 2**20
# Dense configs whose 9 big stacked params (q, k, v, o, gate, up, down, embedding, lm_head) are
# all the same size, so the model is ~9x its largest param.
SIZES = {
    "full": dict(vocab_size=28672, hidden_size=2048, intermediate_size=1792, num_hidden_layers=16,
                 num_attention_heads=14, num_key_value_heads=14, head_dim=128),
    "small": dict(vocab_size=16384, hidden_size=1024, intermediate_size=1024, num_hidden_layers=18,
                  num_attention_heads=8, num_key_value_heads=8, head_dim=128),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=2, head_dim=32),
}


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def run_converter(src: str, dst: str, interval: float = 0.02, command: str = "convert") -> dict:
    """Runs `qwen3-jax convert src dst` (or export) as a child; returns its RSS trace and peak."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    t0 = time.time()
    p = subprocess.Popen([sys.executable, "-m", "qwen3_jax.cli.main", command, src, dst, "--quiet"],
                         cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    trace = []
    while p.poll() is None:
        r = _rss(p.pid)
        if r is not None:
            trace.append((round(time.time() - t0, 3), r))
        time.sleep(interval)
    out, err = p.communicate()
    wall = time.time() - t0
    if p.returncode != 0:
        raise SystemExit(f"converter failed ({p.returncode}):\n{err.decode()[-3000:]}")
    # ru_maxrss (KiB on Linux) is the max over all children waited for so far; runs go from small to
    # large, so after each run it is that run's peak (the polling trace confirms it).
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"peak_rss_bytes": peak, "peak_polled_bytes": max(r for _, r in trace) if trace else None,
            "wall_s": round(wall, 2), "trace": trace, "stdout": out.decode().strip()}


def measure(size: str, workdir: str, with_export: bool = False) -> dict:
    cfg = Qwen3Config(**SIZES[size], name=f"bench-{size}")
    src, dst = os.path.join(workdir, f"{size}-hf"), os.path.join(workdir, f"{size}-orbax")
    t0 = time.time()
    nbytes = write_random_hf_checkpoint(src, cfg, dtype="float32", max_shard_size="1GB")
    gen_s = time.time() - t0
    largest = max(4 * _prod(s) for s in param_shapes(cfg).values())
    res = run_converter(src, dst)
    shutil.rmtree(src, ignore_errors=True)
    if with_export:  # the way back; ru_maxrss is cumulative by now, so its peak comes from polling
        exp = run_converter(dst, os.path.join(workdir, f"{size}-export"), command="export")
        res["export"] = {"peak_polled_bytes": exp["peak_polled_bytes"], "wall_s": exp["wall_s"]}
        shutil.rmtree(os.path.join(workdir, f"{size}-export"), ignore_errors=True)
    shutil.rmtree(dst, ignore_errors=True)
    return {"size": size, "config": SIZES[size], "checkpoint_bytes": nbytes, "largest_param_bytes": largest,
            "generate_s": round(gen_s, 2), **res}


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    big, tiny = result["run"], result["baseline"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r, label in ((big, f"convert {big['checkpoint_bytes'] / 1e9:.2f} GB model"),
                     (tiny, "convert tiny model (fixed cost)")):
        t, rss = zip(*r["trace"]) if r["trace"] else ((), ())
        ax.plot(t, [x / MiB for x in rss], label=label)
    ax.axhline(result["bound_bytes"] / MiB, color="red", ls="--", label="bound: 2 x largest param + 1 GiB")
    ax.axhline((tiny["peak_rss_bytes"] + 2 * big["largest_param_bytes"]) / MiB, color="orange", ls=":",
               label="fixed cost + 2 x largest param")
    ax.axhline(big["checkpoint_bytes"] / MiB, color="gray", ls="-.", label="whole model")
    ax.set_xlabel("seconds since the converter started")
    ax.set_ylabel("resident set size (MiB)")
    ax.set_title(f"qwen3-jax convert: peak {big['peak_rss_bytes'] / MiB:.0f} MiB, "
                 f"largest stacked param {big['largest_param_bytes'] / MiB:.0f} MiB")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("full", "small"), default="full")
    ap.add_argument("--out", default=os.path.join(ROOT, "experiments", "results"),
                    help="directory for bench_convert_memory.{json,png}")
    ap.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-export", action="store_true", help="skip measuring `qwen3-jax export` afterwards")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench_convert_", dir=args.workdir)
    try:
        baseline = measure("tiny", work)
        run = measure(args.size, work, with_export=not args.no_export)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bound = 2 * run["largest_param_bytes"] + GiB
    result = {
        "what": "peak RSS of `qwen3-jax convert` (child process) on a random float32 dense checkpoint",
        "bound_bytes": bound,
        "within_bound": run["peak_rss_bytes"] <= bound,
        "peak_over_fixed_cost_bytes": run["peak_rss_bytes"] - baseline["peak_rss_bytes"],
        "within_tight_bound": run["peak_rss_bytes"] - baseline["peak_rss_bytes"] <= 2 * run["largest_param_bytes"],
        "run": run, "baseline": baseline,
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "bench_convert_memory")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    if not args.no_plot:
        plot(result, stem + ".png")
    print(f"model {run['checkpoint_bytes'] / 1e9:.2f} GB, largest param {run['largest_param_bytes'] / MiB:.0f} MiB; "
          f"peak RSS {run['peak_rss_bytes'] / MiB:.0f} MiB (polled {run['peak_polled_bytes'] / MiB:.0f}), "
          f"bound {bound / MiB:.0f} MiB -> {'OK' if result['within_bound'] else 'EXCEEDED'}; "
          f"fixed cost {baseline['peak_rss_bytes'] / MiB:.0f} MiB, above it "
          f"{result['peak_over_fixed_cost_bytes'] / MiB:.0f} MiB vs 2 x largest "
          f"{2 * run['largest_param_bytes'] / MiB:.0f} MiB; convert took {run['wall_s']} s")
    if "export" in run:
        print(f"export back to safetensors: peak RSS {run['export']['peak_polled_bytes'] / MiB:.0f} MiB (polled), "
              f"{run['export']['wall_s']} s")
    return 0 if result["within_bound"] else 1


if __name__ == "__main__":
    sys.exit(main())
