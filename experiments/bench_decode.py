"""Prefill and decode speed of qwen3_jax against transformers, and against this machine's limits.

    .venv/bin/python experiments/bench_decode.py [--decode-steps 32] [--dtypes float32,bfloat16]

Both frameworks run the same random Qwen3-0.6B-shaped weights (written once with transformers'
`save_pretrained`, loaded by both), on the CPU, in one process, so the ratios are measured under
the same machine load. Limits, measured in the same run:

* memory bandwidth: a jitted sum over 256 MiB (bytes / s), measured right before and right after
  each of qwen3_jax's timed decode calls (the larger of the two is that call's bound: this shared
  machine's bandwidth drifts by tens of percent within minutes, so a bound measured at another
  moment says little). Decode at batch B is bounded by B * bandwidth / (bytes of weights read per
  step); the KV cache reads are not counted.
* matmul peak: a jitted 2048x2048 matmul in the benchmark's dtype (FLOP / s), measured the same
  way around each timed prefill. Prefill FLOPs are 2 * non-embedding params * T + 2 * T^2 * heads *
  head_dim * layers (causal attention) + the LM head at the last position.
* fraction of the limit: the median over the timed calls of (achieved / that call's bound).

Calls alternate between the two frameworks (prefill, then each decode batch), best of
`--repeats`, so both see the same background load of a shared machine.

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


class Probe:
    """This machine's limits, measured on demand: memory bandwidth (bytes/s), matmul peak (FLOP/s)."""

    def __init__(self, dtype_name: str):
        import jax
        import jax.numpy as jnp

        self.jax = jax
        self.x = jnp.ones((256 * 2**20 // 4,), jnp.float32)
        self.sum = jax.jit(jnp.sum)
        self.a = jnp.ones((2048, 2048), jnp.dtype(dtype_name))
        self.mm = jax.jit(lambda a, b: a @ b)
        self.bandwidth(), self.peak()  # compile

    def bandwidth(self) -> float:
        return self.x.nbytes / best_time(lambda: self.sum(self.x).block_until_ready(), 5)

    def peak(self) -> float:
        return 2 * 2048**3 / best_time(lambda: self.mm(self.a, self.a).block_until_ready(), 3)

    def around(self, fn, limit: str):
        """Runs fn() between two measurements of `limit`; returns (fn's result, the larger one)."""
        measure = getattr(self, limit)
        before = measure()
        out = fn()
        return out, max(before, measure())


def hf_config():
    from transformers import Qwen3Config

    # Qwen3-0.6B (its config.json): untied in storage terms is irrelevant here, the release ties them.
    return Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                       rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)


class HF:
    """transformers side: prefill (logits at the last position only) and greedy decode."""

    def __init__(self, path: str, dtype_name: str):
        import torch
        from transformers import Qwen3ForCausalLM

        self.torch = torch
        self.model = Qwen3ForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype_name)).eval()

    def prefill(self, prompt: np.ndarray) -> float:
        ids = self.torch.tensor(prompt)
        with self.torch.inference_mode():
            t0 = time.perf_counter()
            self.model(ids, logits_to_keep=1)
            return time.perf_counter() - t0

    def decode(self, prompts: np.ndarray, steps: int) -> float:
        """Seconds for steps - 1 decode steps (generate(steps) minus generate(1))."""
        ids = self.torch.tensor(prompts)
        kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
        with self.torch.inference_mode():
            t0 = time.perf_counter()
            self.model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
            t1 = time.perf_counter()
            self.model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, **kw)
            t2 = time.perf_counter()
        return (t2 - t1) - (t1 - t0)


class Ours:
    """qwen3_jax side: the engine's compiled prefill and on-device decode loop."""

    def __init__(self, path: str, dtype_name: str):
        import qwen3_jax
        from qwen3_jax.generate import GREEDY, Engine

        self.model = qwen3_jax.load(path, dtype_name)
        self.engine = Engine(self.model)
        self.greedy = GREEDY

    def prefill(self, prompt: np.ndarray) -> float:
        import jax

        t0 = time.perf_counter()
        run = self.engine.start(prompt.tolist(), max_new_tokens=1, sampling=self.greedy, stop_tokens=[])
        jax.block_until_ready(run.state["tokens"])
        return time.perf_counter() - t0

    def decode(self, prompts: np.ndarray, steps: int) -> float:
        import jax

        run = self.engine.start(prompts.tolist(), max_new_tokens=steps, sampling=self.greedy, stop_tokens=[])
        jax.block_until_ready(run.state["tokens"])
        t0 = time.perf_counter()
        run.advance()
        jax.block_until_ready(run.state["tokens"])
        dt = time.perf_counter() - t0
        assert all(len(r) == steps for r in run.tokens())
        return dt


def bench_pair(path: str, dtype_name: str, prompt_len: int, decode_prompt: int, steps: int, batches, repeats: int):
    """Measures both frameworks, alternating call by call so both see the same machine load.

    Each timed qwen3_jax call is paired with the machine limit measured around it (`Probe.around`).
    """
    rng = np.random.default_rng(0)
    probe = Probe(dtype_name)
    sides = {"transformers": HF(path, dtype_name), "ours": Ours(path, dtype_name)}
    res = {name: {} for name in sides}
    pairs = {}  # metric -> [(seconds, limit measured around the call)] for qwen3_jax

    def timed(name, fn, metric, limit):
        if name != "ours":
            return fn()
        t, lim = probe.around(fn, limit)
        pairs.setdefault(metric, []).append((t, lim))
        return t

    prompt = rng.integers(0, 151_000, (1, prompt_len))
    for name, side in sides.items():  # warm-up: compiles, first-call allocations
        t0 = time.perf_counter()
        side.prefill(prompt)
        res[name]["prefill_first_call_s"] = time.perf_counter() - t0
    best = {name: [] for name in sides}
    for _ in range(repeats):
        for name, side in sides.items():
            best[name].append(timed(name, lambda: side.prefill(prompt), "prefill_tokens_per_s", "peak"))
    for name in sides:
        res[name]["prefill_tokens_per_s"] = prompt_len / min(best[name])
    for b in batches:
        prompts = rng.integers(0, 151_000, (b, decode_prompt))
        metric = f"decode_b{b}_tokens_per_s"
        for name, side in sides.items():
            t0 = time.perf_counter()
            side.decode(prompts, 2)
            side.decode(prompts, steps)
            res[name][f"decode_b{b}_first_call_s"] = time.perf_counter() - t0
        best = {name: [] for name in sides}
        for _ in range(repeats):
            for name, side in sides.items():
                best[name].append(timed(name, lambda: side.decode(prompts, steps), metric, "bandwidth"))
        for name in sides:
            res[name][metric] = b * (steps - 1) / min(best[name])
    res["ours"]["timed_calls"] = {m: [{"seconds": t, "limit": lim} for t, lim in v] for m, v in pairs.items()}
    model = sides["ours"].model
    total, _ = model.num_params()
    cfg = model.config
    itemsize = 2 if dtype_name == "bfloat16" else np.dtype(dtype_name).itemsize
    res["ours"]["weight_bytes"] = total * itemsize
    emb = cfg.vocab_size * cfg.hidden_size
    attn = 2 * prompt_len**2 * cfg.num_attention_heads * cfg.head_dim * cfg.num_hidden_layers
    res["ours"]["prefill_flops"] = 2 * (total - emb) * prompt_len + attn + 2 * emb
    del sides, model
    gc.collect()
    return res["transformers"], res["ours"]


GOALS = {"prefill": 70, "decode_b1": 85}  # % of the machine limit


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
    for i, m in enumerate(metrics):  # the goals: prefill 70% of peak, batch-1 decode 85% of bound
        goal = GOALS.get(m.replace("_tokens_per_s", ""))
        if goal:
            axes[1].hlines(goal, i - 0.2, i + 0.6, colors="r", linestyles="--", lw=1,
                           label="issue goal" if i == 0 else None)
    axes[1].legend(fontsize=8)
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
            hf, ours = bench_pair(tmp, d, a.prompt_len, a.decode_prompt, a.decode_steps, batches, a.repeats)
            print("transformers", hf, "\nqwen3_jax", ours, flush=True)
            frac, ratio = {}, {}
            for k, calls in ours["timed_calls"].items():
                ratio[k] = ours[k] / hf[k]
                if k.startswith("prefill"):  # achieved FLOP/s over the peak measured around the call
                    f = [ours["prefill_flops"] / c["seconds"] / c["limit"] for c in calls]
                else:  # achieved weight bytes/s over the bandwidth measured around the call
                    f = [ours["weight_bytes"] * (a.decode_steps - 1) / c["seconds"] / c["limit"] for c in calls]
                frac[k] = float(np.median(f))
            results["runs"][d] = {"transformers": hf, "ours": ours, "ratio_to_transformers": ratio,
                                  "fraction_of_limit": frac}
            print("ratio", ratio, "\nfraction of limit", frac, flush=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    plot(results, os.path.splitext(a.out)[0] + ".png")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
