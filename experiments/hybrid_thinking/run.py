"""Builds the demo hybrid-thinking model from nothing: tokenizer, pretraining, cold-start SFT, GRPO,
thinking-mode fusion SFT, general RL (Qwen3 report arXiv 2505.09388 §3-4, at toy scale).

    python experiments/hybrid_thinking/run.py --out runs/hybrid            # the full recipe
    python experiments/hybrid_thinking/run.py --out /tmp/h --scale 0.05     # a quick try

Writes into --out: ``model/`` (the Hugging Face directory: config, safetensors, tokenizer,
generation config), ``metrics.json`` (per stage: training history, seconds, evaluation),
``*.png`` plots. ``--ship`` copies the model to ``qwen3_jax/demo_model/`` (the default of
``make demo``) and the metrics/plots to ``experiments/hybrid_thinking/``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REPO = HERE.parent.parent

import yaml  # noqa: E402


def _rl_records(seed: int, n: int, mixed: bool):
    """Prompt records for step i: thinking prompts, or (mixed) /think, /no_think and switched chats."""
    from qwen3_jax.post.arithmetic import problems

    def records(i):
        rng = random.Random(seed * 7919 + i)
        items = problems(2 * n, seed=seed * 1_000_003 + i)
        out = []
        for k in range(n):
            p, q = items[2 * k], items[2 * k + 1]
            if not mixed:
                out.append({"messages": [{"role": "user", "content": p.question}], "answer": str(p.answer)})
                continue
            flag = rng.choice(["/think", "/no_think", None])
            msgs = [{"role": "user", "content": p.question + (f" {flag}" if flag else "")}]
            if rng.random() < 0.3:
                other = "/no_think" if flag != "/no_think" else "/think"
                msgs = [{"role": "user", "content": f"{q.question} {other}"},
                        {"role": "assistant", "content": str(q.answer)}] + msgs
            out.append({"messages": msgs, "answer": str(p.answer)})
        return out

    return records


def _evaluate(params, model_config, tok, n, budgets, seed, e):
    from qwen3_jax.api import Model
    from qwen3_jax.post.arithmetic_eval import evaluate

    model = Model(model_config, params)
    model.tokenizer = tok
    start = time.perf_counter()
    report = evaluate(model, tok, n=n, seed=seed, budgets=budgets, follow_n=e["follow_n"],
                      budget_n=e.get("budget_n"), batch=50)
    report["seconds"] = time.perf_counter() - start
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--config", default=str(HERE / "config.yaml"))
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every stage's steps (quick tries)")
    p.add_argument("--stages", default="pretrain,cold_start_sft,grpo,fusion_sft,general_rl")
    p.add_argument("--ship", action="store_true", help="copy the result into the repository")
    a = p.parse_args(argv)
    cfg = yaml.safe_load(open(a.config))
    stages = a.stages.split(",")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    import jax

    from qwen3_jax.config import Qwen3Config
    from qwen3_jax.post import arithmetic as A
    from qwen3_jax.post import arithmetic_data as D
    from qwen3_jax.post.sft_data import tokenize_chat
    from qwen3_jax.text.train_bpe import train_bpe

    import recipe

    seed = cfg["seed"]
    steps = lambda s: max(1, int(round(cfg[s]["steps"] * a.scale)))  # noqa: E731
    metrics_path = out / "metrics.json"
    order = ["tokenizer", "pretrain", "cold_start_sft", "grpo", "fusion_sft", "general_rl"]

    def fingerprint(name):  # what a stage's result depends on: the sections of this stage and all before it
        upto = order[:order.index(name) + 1] if name in order else order
        return json.dumps([a.scale, cfg["seed"], cfg["tokenizer"], cfg["model"]] +
                          [cfg[k] for k in upto if k in cfg and k != "tokenizer"], sort_keys=True)

    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {"stages": {}}
    metrics["stages"] = {k: v for k, v in metrics["stages"].items() if v.get("fingerprint") == fingerprint(k)}
    metrics.update(config=cfg, scale=a.scale)
    t_all = time.perf_counter()

    def record(name, seconds, history=None, params=None, final=False):
        entry = {"seconds": seconds, "history": history or [], "fingerprint": fingerprint(name)}
        if params is not None:
            e = cfg["eval"]
            entry["eval"] = _evaluate(params, model_config, tok, e["final_n"] if final else e["stage_n"],
                                      e["budgets"] if final else None, seed + 1, e)
            ev = entry["eval"]
            print(f"[{name}] think acc {ev['think']['accuracy']:.3f}  no_think acc {ev['no_think']['accuracy']:.3f}  "
                  f"follow {ev['think_follow']}  think len {ev['think']['mean_think_tokens']:.1f}", flush=True)
        metrics["stages"][name] = entry
        metrics_path.write_text(json.dumps(metrics, indent=1))

    def stage(name, run):
        """Runs a stage unless an earlier run of this config finished it (its params are kept)."""
        saved = out / f"params_{name}.pkl"
        if name in metrics["stages"] and saved.exists():
            print(f"[{name}] done earlier; reusing {saved}", flush=True)
            return pickle.loads(saved.read_bytes())
        t0 = time.perf_counter()
        params, history = run()
        params = jax.device_get(params)
        seconds = time.perf_counter() - t0
        saved.write_bytes(pickle.dumps(params))
        record(name, seconds, history, params if cfg["eval"]["stage_n"] else None)
        return params

    # 0. tokenizer (deterministic: rebuilt on a resume)
    t0 = time.perf_counter()
    from qwen3_jax.generate.chat import STOP_THINKING

    texts = D.pretraining_texts(cfg["tokenizer"]["texts"], seed=seed + 11)
    texts += [STOP_THINKING.replace("</think>", ""), "/think /no_think"] * 50
    tok = train_bpe(texts, cfg["tokenizer"]["vocab_size"])
    model_config = Qwen3Config(vocab_size=len(tok), bos_token_id=tok.endoftext_id, eos_token_id=tok.im_end_id,
                               **cfg["model"])
    if "tokenizer" not in metrics["stages"]:
        record("tokenizer", time.perf_counter() - t0)
    print(f"tokenizer: {len(tok)} ids; model: {model_config}", flush=True)

    # 1. pretraining on generated text (the project's train step)
    def pretrain():
        c = cfg["pretrain"]
        return recipe.pretrain(model_config, D.pretraining_texts(c["docs"], seed=seed), tok, steps=steps("pretrain"),
                               batch_size=c["batch_size"], seq_len=c["seq_len"], lr=c["lr"], seed=seed)

    params = stage("pretrain", pretrain)

    def sft(name, samples, params):
        c = cfg[name]
        return recipe.sft(name, model_config, params, samples, steps=steps(name), batch_size=c["batch_size"],
                          seq_len=c["seq_len"], lr=c["lr"], seed=seed)

    def rl(name, params, mixed):
        c = cfg[name]
        records = _rl_records(seed + len(name), c["prompts"], mixed=mixed)
        prompts = [r for i in range(steps(name)) for r in records(i)]
        return recipe.grpo(name, model_config, params, tok, prompts, out / f"{name}_run", steps=steps(name),
                           prompts_per_step=c["prompts"], group_size=c["group"], max_new_tokens=c["max_new_tokens"],
                           seq_len=c["seq_len"], lr=c["lr"], temperature=c["temperature"], seed=seed + len(name))

    # 2. cold-start SFT: thinking only, the long column-method CoT
    def cold_start():
        c = cfg["cold_start_sft"]
        items = A.problems(c["problems"], seed=seed + 2)
        # a share drawn at each operation's longest operands (4 digits for + and -, 2 for *): the
        # long problems are where the small model errs (sub-4d, mul-2d), uniform draws give them 1/4
        rng = random.Random(seed + 3)
        n_hard = int(len(items) * c.get("hard_share", 0.0))
        items[:n_hard] = [A.sample(rng, op=op, digits=2 if op == "*" else 4)
                          for op in (A.OPS * n_hard)[:n_hard]]
        random.Random(seed + 5).shuffle(items)
        return sft("cold_start_sft", [tokenize_chat(D.thinking_conversation(q), tok) for q in items], params)

    params = stage("cold_start_sft", cold_start)

    # 3. reasoning RL: GRPO with the correctness and format rewards
    if "grpo" in stages:
        params = stage("grpo", lambda: rl("grpo", params, mixed=False))

    # 4. thinking-mode fusion SFT: /think, /no_think (user or system), multi-turn switches, budget cuts
    def fusion():
        c = cfg["fusion_sft"]
        items = A.problems(c["problems"], seed=seed + 4)
        n_budget = int(len(items) * c["budget_share"])
        convos = D.fusion_conversations(items[n_budget:], seed=seed + 4)
        samples = [tokenize_chat(m, tok, train_on="last") for m in convos]
        rng = random.Random(seed + 4)
        samples += [D.budget_sample(q, tok, rng.choice([0, 1, 2, 4, 8, 16, 24, 32, 48, 64]),
                                    flag=rng.choice([None, "/think"])) for q in items[:n_budget]]
        return sft("fusion_sft", samples, params)

    params = stage("fusion_sft", fusion)

    # 5. general RL: format rewards over mixed modes and switched chats, plus correctness
    if "general_rl" in stages:
        params = stage("general_rl", lambda: rl("general_rl", params, mixed=True))

    metrics["train_seconds"] = sum(v["seconds"] for v in metrics["stages"].values())
    record("final", 0.0, None, params, final=True)
    metrics["total_seconds"] = metrics["train_seconds"] + metrics["stages"]["final"]["eval"]["seconds"] + sum(
        v.get("eval", {}).get("seconds", 0.0) for k, v in metrics["stages"].items() if k != "final")
    model_dir = out / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    recipe.save_hf(model_dir, model_config, params, tok)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    import plots

    plots.write_all(metrics, out)
    if a.ship:
        dst = REPO / "qwen3_jax" / "demo_model"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(model_dir, dst)
        for f in list(out.glob("*.png")) + [out / "tables.md"]:
            shutil.copy(f, HERE / f.name)
        shutil.copy(out / "metrics.json", HERE / "results.json")
    print(f"done in {metrics['total_seconds'] / 60:.1f} min -> {model_dir}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.exit(main())
