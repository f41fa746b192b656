"""Benchmark a training step: qwen3_jax vs transformers + torch AdamW on the same small Qwen3.

The model keeps the real 151,936-token vocabulary with a few narrow layers, so (as in small real
models) the LM head is a large share of the FLOPs. Both sides run the same batch and sequence,
AdamW with weight decay and gradient clipping, in float32 and in bf16 mixed precision (float32
master weights; torch through `torch.autocast`). Reported per variant: tokens/s of each, their
ratio, and the model FLOPs utilisation (PaLM's 6N + attention count, `train.metrics.flops_per_token`)
against the float32 / bf16 matmul peak measured in the same run (a jitted 2048² product).

    python experiments/bench_train.py [--layers 4 --hidden 512 --batch 4 --seq 256 --steps 5]

writes experiments/results/bench_train.{json,png}. Goal (issue 12): >= 1.5x the torch step's
tokens/s and > 50% of the matmul peak.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from qwen3_jax.config import Qwen3Config
from qwen3_jax.sharding.mesh import make_mesh
from qwen3_jax.train.config import config_from_dict
from qwen3_jax.train.metrics import flops_per_token, measure_matmul_peak
from qwen3_jax.train.step import build_train_step

HERE = os.path.dirname(os.path.abspath(__file__))


def model_fields(a) -> dict:
    return dict(vocab_size=151936, hidden_size=a.hidden, intermediate_size=3 * a.hidden, num_hidden_layers=a.layers,
                num_attention_heads=a.hidden // 64, num_key_value_heads=max(1, a.hidden // 128), head_dim=64,
                tie_word_embeddings=False, max_position_embeddings=max(4096, a.seq), rope_theta=1e6, name="bench")


def batch_of(a, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 151643, size=(a.batch, a.seq)).astype(np.int32)
    return {"tokens": tokens, "segment_ids": np.ones_like(tokens),
            "positions": np.broadcast_to(np.arange(a.seq, dtype=np.int32), tokens.shape).copy()}


def bench_jax(a, dtype: str) -> float:
    cfg = config_from_dict({
        "model": {"config": model_fields(a), "dtype": dtype, "remat": "none"},
        "train": {"steps": 1000, "batch_size": a.batch, "seq_len": a.seq, "loss_chunk": a.loss_chunk},
        "optimizer": {"lr": 1e-4, "schedule": "constant", "weight_decay": 0.1, "clip_norm": 1.0},
        "mesh": "data=1"})
    ts = build_train_step(cfg, make_mesh("data=1", devices=jax.devices()[:1]))
    state = ts.init_state()
    batch = ts.place_batch(batch_of(a))
    for _ in range(2):
        state, m = ts(state, batch)
    jax.block_until_ready(m)
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        state, m = ts(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    return a.batch * a.seq / float(np.median(times))


def bench_torch(a, dtype: str) -> float:
    import torch
    from transformers import Qwen3Config as HFConfig, Qwen3ForCausalLM

    torch.manual_seed(0)
    f = model_fields(a)
    f.pop("name")
    model = Qwen3ForCausalLM(HFConfig(**f, attn_implementation="sdpa")).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    ids = torch.from_numpy(batch_of(a)["tokens"].astype(np.int64))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return a.batch * a.seq / float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--loss-chunk", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "bench_train"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    mc = Qwen3Config(**model_fields(a))
    fpt = flops_per_token(mc, a.seq)
    rows = []
    for dtype in a.dtypes.split(","):
        jdt = jnp.float32 if dtype == "float32" else jnp.bfloat16
        peak_before = measure_matmul_peak(jdt)
        ours = bench_jax(a, dtype)
        theirs = bench_torch(a, dtype)
        peak = max(peak_before, measure_matmul_peak(jdt))
        row = {"dtype": dtype, "qwen3_jax_tokens_per_s": ours, "torch_tokens_per_s": theirs, "ratio": ours / theirs,
               "matmul_peak_flops": peak, "qwen3_jax_mfu": ours * fpt / peak, "torch_mfu": theirs * fpt / peak}
        rows.append(row)
        print(f"{dtype:9s} qwen3_jax {ours:8.1f} tok/s | torch {theirs:8.1f} tok/s | ratio {ours / theirs:.2f}x | "
              f"MFU {row['qwen3_jax_mfu']:.0%} (torch {row['torch_mfu']:.0%}) of {peak / 1e9:.0f} GFLOP/s")
    out = {"model": model_fields(a), "batch": a.batch, "seq": a.seq, "flops_per_token": fpt, "steps": a.steps,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__,
                       "torch": torch.__version__},
           "goal": {"ratio": 1.5, "mfu": 0.5}, "results": rows}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out + ".json", "w") as f:
        json.dump(out, f, indent=2)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    x = np.arange(len(rows))
    ax1.bar(x - 0.2, [r["qwen3_jax_tokens_per_s"] for r in rows], 0.4, label="qwen3_jax")
    ax1.bar(x + 0.2, [r["torch_tokens_per_s"] for r in rows], 0.4, label="transformers + torch")
    ax1.set_xticks(x, [r["dtype"] for r in rows]); ax1.set_ylabel("training tokens/s"); ax1.legend()
    ax2.bar(x - 0.2, [100 * r["qwen3_jax_mfu"] for r in rows], 0.4, label="qwen3_jax")
    ax2.bar(x + 0.2, [100 * r["torch_mfu"] for r in rows], 0.4, label="torch")
    ax2.axhline(50, color="gray", ls="--", lw=1, label="goal 50%")
    ax2.set_xticks(x, [r["dtype"] for r in rows]); ax2.set_ylabel("% of measured matmul peak"); ax2.legend()
    fig.suptitle(f"train step, {a.layers} layers x {a.hidden}, vocab 151,936, batch {a.batch} x {a.seq}")
    fig.tight_layout()
    fig.savefig(a.out + ".png", dpi=120)
    print("wrote", a.out + ".json", a.out + ".png")


if __name__ == "__main__":
    main()
