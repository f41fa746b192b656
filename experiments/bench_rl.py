"""Benchmark GRPO's rollout: tokens/s of `rollout.sample_groups` against `Model.generate` on the same
batch, and the share of a GRPO step spent in rollout versus update.

Model: a small Qwen3 shape with the real 151,936-id vocabulary (random float32 weights), the Qwen3
tokenizer, arithmetic prompts with /think and /no_think flags, G completions per prompt, sampled
at temperature 1 (stop tokens: <|im_end|>, <|endoftext|>; a random model rarely stops, so rows run
to max_new_tokens). Both paths are compiled first; each figure is the median of timed repeats.
Goal (issue 13): the rollout within 1.2x of `Model.generate` on the same batch.

    python experiments/bench_rl.py        # writes experiments/results/bench_rl.{json,png}
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import json
import platform
import tempfile
import time

import jax
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="GRPO steps (the first, compiling, is not counted)")
    args = ap.parse_args()

    import qwen3_jax
    from qwen3_jax.config import Qwen3Config
    from qwen3_jax.generate.sampling import Sampling
    from qwen3_jax.post import rollout, synthetic
    from qwen3_jax.post.grpo import GRPOSection, grpo
    from qwen3_jax.train.config import config_from_dict

    shape = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, max_position_embeddings=1024, tie_word_embeddings=True,
                 rope_theta=1e6, name="bench-rl")
    cfg = Qwen3Config(**shape)
    tok = qwen3_jax.Tokenizer.qwen3()
    model = qwen3_jax.Model(cfg, qwen3_jax.init_params(cfg, 0))
    prompts = rollout.PromptSet.from_records(synthetic.prompt_records(args.prompts, seed=0), tok, 128)
    rows = [p for p in prompts.ids for _ in range(args.group)]
    stops = tok.eos_token_ids

    def timed(fn):
        fn(0)  # compile
        out = []
        for r in range(1, args.repeats + 1):
            t = time.perf_counter()
            n = fn(r)
            out.append((time.perf_counter() - t, n))
        secs = float(np.median([s for s, _ in out]))
        toks = float(np.median([n for _, n in out]))
        return secs, toks / secs

    def via_generate(seed):
        ids = model.generate(rows, args.new, sampling=Sampling(temperature=1.0, seed=seed), stop_tokens=stops,
                             tokenizer=tok)
        return sum(len(i) for i in ids)

    def via_rollout(seed):
        b = rollout.sample_groups(model, tok, prompts, args.group, args.new, Sampling(temperature=1.0, seed=seed),
                                  seq_len=128 + args.new)
        return b.generated_tokens

    gen_s, gen_tps = timed(via_generate)
    roll_s, roll_tps = timed(via_rollout)
    print(f"Model.generate: {gen_tps:.1f} tok/s ({gen_s:.2f} s); rollout: {roll_tps:.1f} tok/s ({roll_s:.2f} s); "
          f"generate/rollout time ratio {roll_s / gen_s:.3f}")

    train = config_from_dict({
        "model": {"config": dict(shape)}, "mesh": "data=1",
        "train": {"steps": args.steps, "batch_size": args.prompts * args.group, "seq_len": 128 + args.new,
                  "loss_chunk": 64},
        "optimizer": {"lr": 1e-5, "schedule": "constant", "warmup_steps": 0, "weight_decay": 0.0},
        "checkpoint": {"every": args.steps, "keep": 1, "async_save": True},
        "log": {"every": 1, "tensorboard": False, "progress": False, "peak_flops": 1e11}})
    section = GRPOSection.from_dict({"prompts": [f"synthetic:mixed:{args.prompts * args.steps}"],
                                     "group_size": args.group, "max_prompt_tokens": 128, "max_new_tokens": args.new,
                                     "rewards": {"accuracy": 1.0, "format": 0.5}, "beta": 0.04})
    with tempfile.TemporaryDirectory() as d:
        _, recs = grpo(train, section, os.path.join(d, "run"), quiet=True, devices=jax.devices()[:1], tokenizer=tok)
    steady = recs[1:] or recs
    share = float(np.median([r["rollout_share"] for r in steady]))
    step_roll = float(np.median([r["rollout_seconds"] for r in steady]))
    step_upd = float(np.median([r["update_seconds"] for r in steady]))
    step_tps = float(np.median([r["rollout_tokens_per_second"] for r in steady]))
    print(f"GRPO step: rollout {step_roll:.2f} s ({share:.0%}), update {step_upd:.2f} s; "
          f"in-step rollout {step_tps:.1f} tok/s")

    result = {"machine": platform.processor() or platform.machine(), "jax": jax.__version__,
              "model": shape, "vocab": cfg.vocab_size, "rows": len(rows), "max_new_tokens": args.new,
              "generate_tokens_per_second": gen_tps, "rollout_tokens_per_second": roll_tps,
              "rollout_over_generate_time": roll_s / gen_s, "goal_max_ratio": 1.2,
              "grpo_step": {"rollout_seconds": step_roll, "update_seconds": step_upd, "rollout_share": share,
                            "rollout_tokens_per_second_in_step": step_tps, "steps_counted": len(steady)}}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "bench_rl.json"), "w") as f:
        json.dump(result, f, indent=2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.bar(["Model.generate", "GRPO rollout"], [gen_tps, roll_tps], color=["#888", "#3a7"])
    a.set_ylabel("generated tokens / s")
    a.set_title(f"{len(rows)} rows x {args.new} new tokens")
    b.bar(["rollout", "update"], [step_roll, step_upd], color=["#3a7", "#37a"])
    b.set_ylabel("seconds per GRPO step")
    b.set_title(f"rollout share {share:.0%}")
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "results", "bench_rl.png"), dpi=120)


if __name__ == "__main__":
    main()
