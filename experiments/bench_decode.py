"""Prefill and decode speed of qwen3_jax against transformers, and against this machine's limits.

    .venv/bin/python experiments/bench_decode.py [--decode-steps 32] [--dtypes float32,bfloat16]

Both frameworks run the same random Qwen3-0.6B-shaped weights (written once with transformers'
`save_pretrained`, loaded by both), on the CPU, in one process, so the ratios are measured under
the same machine load. Limits, measured in the same run:

* memory bandwidth: a jitted sum over 256 MiB (bytes / s). Decode at batch B is bounded by
  B * bandwidth / (bytes of weights read per step); the KV cache reads are not counted.
* matmul peak: a jitted 2048x2048 matmul in the benchmark's dtype (FLOP / s). Prefill FLOPs are
  2 * non-embedding params * T + 2 * T^2 * heads * head_dim * layers (causal attention) + the
  LM head at the last position.

Results go to experiments/results/bench_decode.json and bench_decode.png.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def best_time(fn, repeats: int) -> float:
    """Fastest of `repeats` calls (seconds); the machine is shared, the minimum is the least noisy."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine_limits(dtype_name: str) -> dict:
    """Measured memory bandwidth (bytes/s) and matmul peak (FLOP/s) of this machine."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((256 * 2**20 // 4,), jnp.float32)
    s = jax.jit(jnp.sum)
    s(x).block_until_ready()
    bw = x.nbytes / best_time(lambda: s(x).block_until_ready(), 10)
    dt = jnp.dtype(dtype_name)
    a = jnp.ones((2048, 2048), dt)
    mm = jax.jit(lambda a, b: a @ b)
    mm(a, a).block_until_ready()
    peak = 2 * 2048**3 / best_time(lambda: mm(a, a).block_until_ready(), 5)
    del x, a
    return {"bandwidth_bytes_per_s": bw, "matmul_flops_per_s": peak}


def hf_config():
    from transformers import Qwen3Config

    # Qwen3-0.6B (FACTS §1.1): untied in storage terms is irrelevant here, the release ties them.
    return Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                       rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)


def bench_hf(path: str, dtype_name: str, prompt_len: int, decode_prompt: int, steps: int, batches, repeats: int):
    import torch
    from transformers import Qwen3ForCausalLM

    model = Qwen3ForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype_name)).eval()
    rng = np.random.default_rng(0)
    out = {}
    ids = torch.tensor(rng.integers(0, 151_000, (1, prompt_len)))
    with torch.inference_mode():
        model(ids, logits_to_keep=1)
        t = best_time(lambda: model(ids, logits_to_keep=1), repeats)
    out["prefill_tokens_per_s"] = prompt_len / t
    for b in batches:
        ids = torch.tensor(rng.integers(0, 151_000, (b, decode_prompt)))
        kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=2, min_new_tokens=2, **kw)
            t1 = best_time(lambda: model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw), repeats)
            tn = best_time(lambda: model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, **kw), 1)
        out[f"decode_b{b}_tokens_per_s"] = b * (steps - 1) / max(tn - t1, 1e-9)
    del model
    gc.collect()
    return out


def bench_ours(path: str, dtype_name: str, prompt_len: int, decode_prompt: int, steps: int, batches, repeats: int):
    import jax

    import qwen3_jax
    from qwen3_jax.generate import GREEDY, Engine

    model = qwen3_jax.load(path, dtype_name)
    engine = Engine(model)
    rng = np.random.default_rng(0)
    out = {}
    prompt = [rng.integers(0, 151_000, prompt_len).tolist()]

    def prefill():
        run = engine.start(prompt, max_new_tokens=1, sampling=GREEDY, stop_tokens=[])
        jax.block_until_ready(run.state["tokens"])

    t0 = time.perf_counter()
    prefill()
    out["prefill_compile_s"] = time.perf_counter() - t0
    out["prefill_tokens_per_s"] = prompt_len / best_time(prefill, repeats)
    for b in batches:
        prompts = rng.integers(0, 151_000, (b, decode_prompt)).tolist()

        def decode():
            run = engine.start(prompts, max_new_tokens=steps, sampling=GREEDY, stop_tokens=[])
            jax.block_until_ready(run.state["tokens"])
            t = time.perf_counter()
            run.advance()
            jax.block_until_ready(run.state["tokens"])
            assert all(len(r) == steps for r in run.tokens())
            return time.perf_counter() - t

        t0 = time.perf_counter()
        decode()
        out[f"decode_b{b}_compile_s"] = time.perf_counter() - t0
        t = min(decode() for _ in range(max(1, repeats - 1)))
        out[f"decode_b{b}_tokens_per_s"] = b * (steps - 1) / t
    total, _ = model.num_params()
    cfg = model.config
    itemsize = np.dtype(dtype_name if dtype_name != "bfloat16" else np.float16).itemsize
    out["weight_bytes"] = total * itemsize
    emb = cfg.vocab_size * cfg.hidden_size
    attn = 2 * prompt_len**2 * cfg.num_attention_heads * cfg.head_dim * cfg.num_hidden_layers
    out["prefill_flops"] = 2 * (total - emb) * prompt_len + attn + 2 * emb
    del model, engine
    gc.collect()
    return out


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = list(results["runs"])
    metrics = [k for k in results["runs"][dtypes[0]]["ours"] if k.endswith("tokens_per_s")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.2
    xs = np.arange(len(metrics))
    for i, d in enumerate(dtypes):
        r = results["runs"][d]
        axes[0].bar(xs + (2 * i) * width, [r["transformers"][m] for m in metrics], width, label=f"transformers {d}")
        axes[0].bar(xs + (2 * i + 1) * width, [r["ours"][m] for m in metrics], width, label=f"qwen3_jax {d}")
        axes[1].bar(xs + i * width * 2, [100 * r["fraction_of_limit"][m] for m in metrics], width * 2,
                    label=f"qwen3_jax {d}")
    for ax in axes:
        ax.set_xticks(xs + width * 1.5, [m.replace("_tokens_per_s", "") for m in metrics])
        ax.legend(fontsize=8)
    axes[0].set_ylabel("tokens / s")
    axes[0].set_yscale("log")
    axes[0].set_title("Qwen3-0.6B shape, CPU")
    axes[1].set_ylabel("% of machine limit")
    axes[1].axhline(100, color="k", lw=0.5)
    axes[1].set_title("prefill: of matmul peak; decode: of bandwidth bound")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--decode-prompt", type=int, default=64)
    p.add_argument("--decode-steps", type=int, default=32)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(RESULTS, "bench_decode.json"))
    a = p.parse_args()
    import torch

    from qwen3_jax.testing import hf_model  # noqa: F401  (test extra present)

    batches = [int(b) for b in a.batches.split(",")]
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
               "settings": {"prompt_len": a.prompt_len, "decode_prompt": a.decode_prompt,
                            "decode_steps": a.decode_steps, "batches": batches, "repeats": a.repeats},
               "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        from transformers import Qwen3ForCausalLM

        torch.manual_seed(0)
        Qwen3ForCausalLM(hf_config()).save_pretrained(tmp)  # float32, HF's init (std 0.02)
        gc.collect()
        for d in a.dtypes.split(","):
            print(f"--- {d}", flush=True)
            limits = machine_limits(d)
            print("limits", limits, flush=True)
            hf = bench_hf(tmp, d, a.prompt_len, a.decode_prompt, a.decode_steps, batches, a.repeats)
            print("transformers", hf, flush=True)
            ours = bench_ours(tmp, d, a.prompt_len, a.decode_prompt, a.decode_steps, batches, a.repeats)
            print("qwen3_jax", ours, flush=True)
            frac, ratio = {}, {}
            for k, v in ours.items():
                if not k.endswith("tokens_per_s"):
                    continue
                ratio[k] = v / hf[k]
                if k.startswith("prefill"):
                    frac[k] = v * ours["prefill_flops"] / a.prompt_len / limits["matmul_flops_per_s"]
                else:
                    b = int(k.split("_")[1][1:])
                    bound = b * limits["bandwidth_bytes_per_s"] / ours["weight_bytes"]
                    frac[k] = v / bound
            results["runs"][d] = {"limits": limits, "transformers": hf, "ours": ours,
                                  "ratio_to_transformers": ratio, "fraction_of_limit": frac}
            print("ratio", ratio, "\nfraction of limit", frac, flush=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    plot(results, os.path.splitext(a.out)[0] + ".png")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
