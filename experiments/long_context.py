"""Does the long-context path extend a model? Perplexity beyond the training length, three ways.

A tiny Qwen3 (the `tiny-dense` preset, RoPE base 10,000, with a 1,024-token byte-level BPE
learned from the corpus by `text.train_bpe`, so that the LM head does not dominate the cost) is
trained with the project's trainer at sequence length 256 on the synthetic corpus (short stories and long stories that state facts
early and ask about them at the end). It is then evaluated, without further training, on held-out
long stories (another seed of the same generator) cut to 256, 512, 1,024 and 2,048 tokens, with:

* plain RoPE (positions beyond 256 were never seen);
* YaRN with factor L / 256 and original_max_position_embeddings 256 (static YaRN as transformers
  applies it, the factor chosen per evaluation length; factor 1 at 256 is plain RoPE);
* Dual Chunk Attention with chunk_size 256, local_size 32 and original_max_position_embeddings
  256 (no relative distance beyond 256; logits scaled by f(L)² = (0.1·ln(L/256) + 1)²).

This is the small-scale version of the claim in the Qwen3 report (arXiv 2505.09388, §3.2) and
Qwen2.5-1M (arXiv 2501.15383) that YaRN and DCA extend the context at inference.

    python experiments/long_context.py                 # ~10 min on 2 CPU cores
    python experiments/long_context.py --steps 50      # quicker, worse model

Writes experiments/results/long_context.{json,png}: per method and length, the perplexity over the
whole window and over its tokens past position 256 (where the methods differ).
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import json
import platform
import shutil
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import qwen3_jax
from qwen3_jax.text.tokenizer import Tokenizer
from qwen3_jax.text.train_bpe import train_bpe
from qwen3_jax.train.config import config_from_dict
from qwen3_jax.train.data import synthetic
from qwen3_jax.train.loop import build_run_data, train

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_LEN = 256
LENGTHS = (256, 512, 1024, 2048)
VOCAB = 1024


def run_config(steps: int, batch: int, tok: Tokenizer) -> dict:
    eot = tok.token_to_id("<|endoftext|>")
    return {
        "model": {"preset": "tiny-dense", "dtype": "float32",
                  "config": {"rope_theta": 10000.0, "vocab_size": VOCAB, "bos_token_id": eot, "eos_token_id": eot}},
        "mesh": "data=1",
        "train": {"steps": steps, "batch_size": batch, "seq_len": TRAIN_LEN, "loss_chunk": 128},
        "optimizer": {"lr": 3e-3, "schedule": "wsd", "warmup_steps": max(1, steps // 10),
                      "decay_steps": max(1, steps // 5), "min_lr_ratio": 0.1, "weight_decay": 0.01},
        "checkpoint": {"every": steps, "keep": 1, "async_save": False},
        "log": {"every": max(1, steps // 10), "tensorboard": False, "progress": True},
        "data": {"sources": [{"path": "synthetic:long", "weight": 0.75}, {"path": "synthetic:general", "weight": 0.25}]},
    }


def eval_sequences(tok: Tokenizer, n: int, length: int) -> np.ndarray:
    """n held-out token windows of `length` tokens, each from one long story (seed 1, unseen)."""
    rows = []
    i = 0
    while len(rows) < n:
        docs = synthetic.documents("long", i + 1, seed=1, long_words=(1500, 2000))
        ids = tok.encode(docs[i])
        i += 1
        if len(ids) >= length + 1:
            rows.append(ids[: length + 1])
        if i > 20 * n:
            raise RuntimeError(f"no held-out story reaches {length + 1} tokens")
    return np.asarray(rows, np.int32)


def variant_config(base: qwen3_jax.Qwen3Config, method: str, length: int) -> qwen3_jax.Qwen3Config:
    if method == "rope":
        return base
    if method == "yarn":
        factor = max(1.0, length / TRAIN_LEN)
        return base.replace(rope_scaling={"rope_type": "yarn", "factor": factor,
                                          "original_max_position_embeddings": TRAIN_LEN})
    if method == "dca":
        return base.replace(dual_chunk_attention_config={"chunk_size": TRAIN_LEN, "local_size": 32,
                                                         "original_max_position_embeddings": TRAIN_LEN})
    raise ValueError(method)


def nll(model: qwen3_jax.Model, seqs: np.ndarray) -> np.ndarray:
    """Per-token negative log-likelihood [n, L] of seqs [n, L + 1] (one row at a time)."""
    out = []
    for row in seqs:
        logits = model.logits(row[None, :-1])[0]
        lp = jax.nn.log_softmax(logits, axis=-1)
        out.append(-np.asarray(jnp.take_along_axis(lp, jnp.asarray(row[1:, None]), axis=-1)[:, 0]))
    return np.stack(out)


def plot(report: dict, path: str) -> None:
    """Perplexity against evaluation length, per method (whole window, and past position 256)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {m: {int(L): v for L, v in per.items()} for m, per in report["results"].items()}
    names = {"rope": "plain RoPE", "yarn": "YaRN (factor L/256)", "dca": "Dual Chunk Attention"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    longer = [L for L in LENGTHS if L > TRAIN_LEN]
    for method, per in results.items():
        axes[0].plot(LENGTHS, [per[L]["ppl"] for L in LENGTHS], marker="o", label=names[method])
        axes[1].plot(longer, [per[L]["ppl_beyond_train"] for L in longer], marker="o", label=names[method])
    for ax, title, xs in zip(axes, ("whole window", f"tokens past position {TRAIN_LEN}"), (LENGTHS, longer)):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(L) for L in xs])
        ax.set_xlabel("evaluation length (tokens)")
        ax.set_ylabel("perplexity")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"tiny Qwen3 trained at {TRAIN_LEN} tokens ({report['train']['steps']} steps), held-out long stories")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--eval-rows", type=int, default=4)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "long_context"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON of --out")
    args = ap.parse_args(argv)
    if args.plot_only:
        with open(args.out + ".json", encoding="utf-8") as f:
            plot(json.load(f), args.out + ".png")
        return 0

    corpus = synthetic.documents("long", 200, seed=0) + synthetic.documents("general", 400, seed=0)
    tok = train_bpe(corpus, VOCAB)
    cfg = config_from_dict(run_config(args.steps, args.batch, tok))
    run_dir = tempfile.mkdtemp(prefix="long_context_run_")
    try:
        t0 = time.time()
        res = train(cfg, os.path.join(run_dir, "run"), data=build_run_data(cfg, tokenizer=tok))
        train_secs = time.time() - t0
        params = jax.device_get(res.state["params"])
        train_loss = [float(m["loss"]) for m in res.metrics if "loss" in m]
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

    base = cfg.model_config()
    seqs = eval_sequences(tok, args.eval_rows, max(LENGTHS))
    results = {}
    jobs = [(m, L) for m in ("rope", "yarn", "dca") for L in LENGTHS]
    for method, L in tqdm(jobs, desc="eval"):
        model = qwen3_jax.Model(variant_config(base, method, L), params)
        tok_nll = nll(model, seqs[:, : L + 1])
        results.setdefault(method, {})[L] = {
            "ppl": float(np.exp(tok_nll.mean())),
            "ppl_beyond_train": float(np.exp(tok_nll[:, TRAIN_LEN:].mean())) if L > TRAIN_LEN else None,
        }

    report = {
        "what": "perplexity of a tiny Qwen3 trained at 256 tokens, evaluated at longer windows",
        "train": {"steps": args.steps, "batch": args.batch, "seq_len": TRAIN_LEN, "seconds": train_secs,
                  "final_loss": train_loss[-1] if train_loss else None},
        "model": base.to_dict(),
        "eval_rows": args.eval_rows,
        "lengths": list(LENGTHS),
        "results": results,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".json.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, args.out + ".json")

    plot(report, args.out + ".png")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
