"""Flash attention against plain XLA attention: what the compilers say, since this CPU cannot time it.

On this CPU the Pallas kernels run in interpret mode, so their speed means nothing. The benchmark
reports instead:

1. TPU (compiled ahead of time for a v5p:2x2x1 topology, `qwen3_jax.ops.attention_aot`): for the
   causal forward at sequence 4,096 and 32,768 with the kernels' default blocks (which follow the
   length: 256 at 4,096, 512 at 32,768) and, for comparison, the other of 256 and 512, the
   compiled FLOPs against the FLOPs of exact causal attention (goal: within 1.1×, i.e. the masked
   blocks are really skipped), the bytes each kernel moves (forward, backward, decode), and the per-chip
   temporaries of each program. For a Pallas kernel XLA counts the cost estimate the kernel
   declares, which the kernel computes from the blocks its causal skip visits: the ratio measures
   the block schedule (how much of the visited blocks lies above the diagonal), not a hardware
   counter.
2. CPU: the peak temporary memory (XLA's `memory_analysis` of the compiled program, forward and
   backward of one attention layer) of "xla" and "flash" at growing sequence length: the plain
   attention grows with T², the flash kernels with T.

Writes experiments/results/bench_attention.json and bench_attention.png.

    python experiments/bench_attention.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qwen3_jax.aot import run_isolated  # noqa: E402
from qwen3_jax.ops.attention import causal_mask, dot_product_attention  # noqa: E402
from qwen3_jax.ops.flash_attention import flash_attention  # noqa: E402
from qwen3_jax.ops.flash_common import default_block  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def tpu_part(seqs, blocks) -> list[dict]:
    """Every kind at the default blocks, then the forward at each of `blocks` that is not the default."""
    runs = [(seqs, None, ["forward", "backward", "decode"])]
    runs += [([s], b, ["forward"]) for b in blocks for s in seqs if b != default_block(s)]
    rows = []
    for run_seqs, block, kinds in tqdm(runs, desc="TPU compiles"):
        args = ["--seq", *map(str, run_seqs), "--kinds", *kinds] + ([] if block is None else ["--block", str(block)])
        rows += run_isolated(f"from qwen3_jax.ops.attention_aot import main; main({args!r})", timeout=3000)
    for r in rows:
        if r["kind"] == "forward":
            r["flops_over_ideal"] = r["flops"] / r["ideal_causal_flops_per_chip"]
    return rows


def cpu_memory(T: int, impl: str, B=1, N=8, K=2, H=64) -> int:
    """Temporary bytes of the compiled forward + backward of one causal attention call on CPU."""
    q = jax.ShapeDtypeStruct((B, T, N, H), jnp.float32)
    kv = jax.ShapeDtypeStruct((B, T, K, H), jnp.float32)

    def attn(q, k, v):
        if impl == "xla":
            slots = jnp.broadcast_to(jnp.arange(T), (B, T))
            return dot_product_attention(q, k, v, causal_mask(slots, jnp.ones((B, T), bool)), H ** -0.5)
        return flash_attention(q, k, v)  # default blocks

    loss = jax.grad(lambda q, k, v: jnp.sum(attn(q, k, v)), argnums=(0, 1, 2))
    compiled = jax.jit(loss).lower(q, kv, kv).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def plot(tpu_rows, cpu_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for impl, marker in (("xla", "o"), ("flash", "s")):
        pts = [r for r in cpu_rows if r["impl"] == impl]
        a.loglog([r["seq"] for r in pts], [r["temp_bytes"] / 2**20 for r in pts], marker=marker, label=impl, base=2)
    a.set_xlabel("sequence length T")
    a.set_ylabel("temporary memory, MiB (fwd+bwd, CPU compile)")
    a.set_title("Peak temporaries: plain XLA vs flash")
    a.legend()
    fwd = [r for r in tpu_rows if r["kind"] == "forward"]
    fwd.sort(key=lambda r: (r["seq"], r["block"]))
    labels = [f"T={r['seq']}\nblock {r['block']}" + (" (default)" if r["default_block"] else "") for r in fwd]
    b.bar(range(len(fwd)), [r["flops_over_ideal"] for r in fwd], color="tab:blue")
    b.axhline(1.1, color="red", linestyle="--", label="goal 1.1×")
    b.axhline(2.0, color="gray", linestyle=":", label="no skipping (2×)")
    b.set_xticks(range(len(fwd)), labels, fontsize=8)
    b.set_ylabel("compiled FLOPs / exact causal FLOPs")
    b.set_title("TPU forward: masked blocks skipped")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer lengths (a smoke run)")
    a = ap.parse_args(argv)
    seqs = [4096] if a.quick else [4096, 32768]
    cpu_seqs = [256, 512, 1024] if a.quick else [256, 512, 1024, 2048, 4096, 8192]
    tpu_rows = tpu_part(seqs, [256, 512])
    cpu_rows = []
    for T in tqdm(cpu_seqs, desc="CPU compile (lengths)"):
        for impl in ("xla", "flash"):
            cpu_rows.append({"seq": T, "impl": impl, "temp_bytes": cpu_memory(T, impl)})
    result = {"tpu_topology": "v5p:2x2x1", "tpu": tpu_rows, "cpu_memory": cpu_rows,
              "note": "TPU FLOPs of a Pallas kernel are its declared cost estimate (visited blocks)."}
    os.makedirs(RESULTS, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:  # write both, then move into place
        j, p = os.path.join(tmp, "bench_attention.json"), os.path.join(tmp, "bench_attention.png")
        with open(j, "w") as f:
            json.dump(result, f, indent=1)
        plot(tpu_rows, cpu_rows, p)
        os.replace(j, os.path.join(RESULTS, "bench_attention.json"))
        os.replace(p, os.path.join(RESULTS, "bench_attention.png"))
    for r in tpu_rows:
        extra = f" FLOPs/ideal {r['flops_over_ideal']:.3f}" if r["kind"] == "forward" else ""
        extra += " (default block)" if r["default_block"] else ""
        print(f"TPU {r['kind']:8s} T={r['seq']:6d} block {r['block']}: temp {r['memory']['temp_size_in_bytes'] / 2**20:8.1f}"
              f" MiB, bytes {r['bytes_accessed'] / 2**20:9.1f} MiB{extra}")
    for r in cpu_rows:
        print(f"CPU {r['impl']:5s} T={r['seq']:5d}: temp {r['temp_bytes'] / 2**20:9.1f} MiB")


if __name__ == "__main__":
    main()
