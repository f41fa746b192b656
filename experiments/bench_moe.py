"""Benchmark one MoE layer: expert-parallel on 8 CPU devices vs single-device sparse vs naive dense.

Shapes keep Qwen3-30B-A3B's proportions scaled down to fit this machine (64 experts, top-8,
D : F = 2048 : 768). For each variant it reports the time per step (forward, and forward+backward
for the sparse paths), the FLOPs the expert matmuls actually perform (tiles of padding included,
as the tiled CPU kernels run them) against the ideal of k experts per token, and, for the
expert-parallel layer, the bytes its all-to-alls move per step against the minimum of every token
copy going out and coming back once.

    python experiments/bench_moe.py            # writes experiments/results/bench_moe.{json,png}

The 8 "devices" are XLA host devices sharing this machine's cores, so the expert-parallel timings
measure the dispatch overhead, not a speed-up; the byte counts are what would cross a network.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from qwen3_jax.ops import moe as moe_ops
from qwen3_jax.ops.expert_parallel import capacity_per_destination, dispatch_plan, expert_parallel_moe
from qwen3_jax.sharding.mesh import make_mesh

HERE = os.path.dirname(os.path.abspath(__file__))


def timeit(fn, *args, repeats: int):
    """(compile+first-run seconds, median seconds of `repeats` further runs)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


def tiled_rows(counts: np.ndarray, tm: int) -> int:
    """Rows the tiled grouped matmul multiplies: each expert's group padded to whole tiles."""
    return int(np.sum(-(-counts // tm) * tm))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=2048, help="tokens per step (all devices)")
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--moe-ffn", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "bench_moe"))
    a = ap.parse_args()
    N, E, K, D, F = a.tokens, a.experts, a.top_k, a.hidden, a.moe_ffn
    ep = len(jax.devices())

    keys = jax.random.split(jax.random.key(0), 5)
    x = jax.random.normal(keys[0], (N, D), jnp.float32)
    router = jax.random.normal(keys[1], (D, E), jnp.float32) * (2.0 / np.sqrt(D))
    wg, wu = (jax.random.normal(k, (E, D, F), jnp.float32) * 0.02 for k in keys[2:4])
    wd = jax.random.normal(keys[4], (E, F, D), jnp.float32) * 0.02
    logits = x @ router
    args = (x, logits, wg, wu, wd)

    flop_row = 2 * 3 * D * F  # gate, up and down projections of one token copy
    ideal = N * K * flop_row
    weights, ids = moe_ops.route(logits, K, True, jnp.float32)
    counts = np.bincount(np.asarray(ids).reshape(-1), minlength=E)
    results = dict(shape=dict(tokens=N, experts=E, top_k=K, hidden=D, moe_ffn=F, devices=ep, dtype="float32"),
                   machine=dict(cpu_count=os.cpu_count(), platform=platform.platform(), jax=jax.__version__),
                   ideal_gflop_forward=ideal / 1e9,
                   expert_load=dict(max_over_mean=float(counts.max() / counts.mean()),
                                    min_over_mean=float(counts.min() / counts.mean())),
                   variants={})

    def single(impl):
        return jax.jit(lambda x, lg, g, u, d: moe_ops.sparse_moe(x, *moe_ops.route(lg, K, True, x.dtype), g, u, d,
                                                                 impl=impl))

    def grad_of(f):
        return jax.jit(jax.grad(lambda *z: jnp.sum(f(*z) ** 2) / N, argnums=(0, 2, 3, 4)))

    # Single-device sparse (tiled, the CPU default) and the naive every-expert-on-every-token layer.
    tm = moe_ops._tile_rows(N * K, E)
    for name, impl, flops in [("single_sparse_tiled", "tiled", tiled_rows(counts, tm) * flop_row),
                              ("naive_dense", "dense", N * E * flop_row)]:
        f = single(impl)
        first, fwd = timeit(f, *args, repeats=a.repeats)
        entry = dict(forward_s=fwd, first_call_s=first, gflop_forward=flops / 1e9, flop_ratio_to_ideal=flops / ideal)
        if impl == "tiled":
            _, entry["forward_backward_s"] = timeit(grad_of(lambda *z: f(*z)), *args, repeats=a.repeats)
        results["variants"][name] = entry
        print(name, json.dumps(entry))

    # Expert-parallel layer on the expert axis: dropless, and two finite capacities.
    mesh = make_mesh(f"expert={ep}")
    n, El = N // ep, E // ep
    bytes_row = D * 4
    minimum = 2 * N * K * bytes_row  # every copy out and back once
    ep_tm = moe_ops._tile_rows(n * K, El)
    for cf in [None, 2.0, 1.25, 1.0]:
        name = "expert_parallel_" + ("dropless" if cf is None else f"cf{cf:g}")
        f = jax.jit(lambda x, lg, g, u, d, cf=cf: expert_parallel_moe(x, lg, g, u, d, top_k=K, norm_topk_prob=True,
                                                                     capacity_factor=cf, dispatch="fixed"))
        with jax.set_mesh(mesh):
            first, fwd = timeit(f, *args, repeats=a.repeats)
            dropped = int(f(*args)[1])
            fb = None
            if cf is None:
                _, fb = timeit(grad_of(lambda *z: f(*z)[0]), *args, repeats=a.repeats)
        # Work and traffic, recomputed from the routing exactly as the layer lays it out.
        C = capacity_per_destination(n, K, E, ep, cf)
        rows_computed = 0
        kept = []  # experts of the copies each sender actually sends
        for src in range(ep):
            p = dispatch_plan(ids[src * n:(src + 1) * n], jnp.ones(n, bool), E, ep, C)
            kept.append(np.asarray(p["sorted_e"])[np.asarray(p["keep"])])
        kept = np.concatenate(kept)
        for dev in range(ep):  # receiver dev runs tiles over the rows of its local experts
            rows_computed += tiled_rows(np.bincount(kept[kept // El == dev] % El, minlength=El), ep_tm)
        flops = rows_computed * flop_row
        sent = 2 * ep * (ep * C) * (bytes_row + 4)  # data and expert ids out, results back (ids only out)
        sent -= ep * (ep * C) * 4
        entry = dict(forward_s=fwd, first_call_s=first, capacity_rows_per_destination=C, dropped_copies=dropped,
                     dropped_fraction=dropped / (N * K), gflop_forward=flops / 1e9,
                     flop_ratio_to_ideal=flops / ideal, all_to_all_bytes=sent, all_to_all_min_bytes=minimum,
                     all_to_all_ratio_to_min=sent / minimum,
                     all_to_all_bytes_off_device=sent * (ep - 1) / ep)
        if fb is not None:
            entry["forward_backward_s"] = fb
        results["variants"][name] = entry
        print(name, json.dumps(entry))
    # The ragged dispatch (TPU/GPU) would send exactly the routed rows: the minimum plus E·4 bytes of counts.
    results["ragged_dispatch_bytes_if_available"] = minimum + ep * ep * E * 4

    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out + ".json", "w") as fh:
        json.dump(results, fh, indent=2)
    plot(results, a.out + ".png")
    print("wrote", a.out + ".json", a.out + ".png")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = results["variants"]
    names = list(v)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    fb = [v[k].get("forward_backward_s", 0) * 1e3 for k in names]
    axes[0].barh(names, fb, color="tab:orange", label="forward+backward")
    axes[0].barh(names, [v[k]["forward_s"] * 1e3 for k in names], color="tab:blue", label="forward")
    axes[0].set_xlabel("ms per step")
    axes[0].legend()
    axes[1].barh(names, [v[k]["flop_ratio_to_ideal"] for k in names], color="tab:green")
    axes[1].axvline(1.0, color="k", lw=0.8)
    axes[1].set_xlabel("expert FLOPs computed / ideal (k experts per token)")
    ep_names = [k for k in names if "all_to_all_ratio_to_min" in v[k]]
    axes[2].barh(ep_names, [v[k]["all_to_all_ratio_to_min"] for k in ep_names], color="tab:red")
    axes[2].axvline(1.0, color="k", lw=0.8)
    axes[2].set_xlabel("all-to-all bytes / minimum\n(each token copy out and back once)")
    for y, k in enumerate(ep_names):
        axes[2].text(v[k]["all_to_all_ratio_to_min"] + 0.1, y, f"dropped {v[k]['dropped_fraction']:.2%}",
                     va="center", fontsize=8)
    axes[2].set_xlim(0, max(v[k]["all_to_all_ratio_to_min"] for k in ep_names) * 1.4)
    s = results["shape"]
    fig.suptitle(f"One MoE layer: {s['tokens']} tokens, {s['experts']} experts top-{s['top_k']}, "
                 f"D={s['hidden']}, F={s['moe_ffn']}, {s['devices']} CPU devices (float32)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
