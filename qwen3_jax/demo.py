"""`make demo` / `python -m qwen3_jax.demo`: the shipped hybrid-thinking model answering arithmetic.

The default model, "demo", is a small Qwen3 trained from nothing by the project's own recipe
(tokenizer, pretraining, cold-start SFT, GRPO, thinking-mode fusion SFT, general RL; see
experiments/hybrid_thinking/) on integer arithmetic: addition and subtraction below 10,000 and
multiplication below 100, thinking in a written-out column method. The demo asks a few questions
in thinking mode, with `/no_think`, and with a thinking budget; then, when stdin is a terminal,
the chat is yours (`/think`, `/no_think`, `/reset`, `/exit`). `--model` runs it on another
checkpoint or preset (e.g. "tiny-dense", random weights). Until the trained model is installed
in `qwen3_jax/demo_model/` (`experiments/hybrid_thinking/run.py --ship`), the demo runs the chat
machinery on "tiny-dense" with random weights instead, and says so.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

DEFAULT_MODEL = "demo"
BUDGET = 16
QUESTION = "What is the capital of France? Answer in one sentence."


def _questions(seed: int) -> list[str]:
    from qwen3_jax.post.arithmetic import problems

    return [p.question for op in ("+", "-", "*") for p in problems(1, seed=seed, op=op, wording=0)]


def _scripted(model, seed: int, max_new_tokens: int) -> None:
    q_add, q_sub, q_mul = _questions(seed)
    turns = [(q_add, {}, "thinking mode"), (q_mul, {}, "thinking mode"),
             (q_sub + " /no_think", {}, "/no_think: answers at once, empty think block"),
             (q_mul, {"thinking_budget": BUDGET}, f"thinking budget of {BUDGET} tokens")]
    for question, kw, label in turns:
        print(f"\n--- {label}\n>>> {question}", flush=True)
        r = model.chat([{"role": "user", "content": question}], max_new_tokens=max_new_tokens,
                       seed=random.Random(seed).randrange(1 << 30), **kw)
        if r.reasoning:
            print("[thinking]\n" + r.reasoning.strip())
        print(f"[answer] {r.content.strip()}   ({r.usage.reasoning_tokens} thinking tokens)", flush=True)


def _random_weights_demo(a) -> int:
    """No trained demo model installed (qwen3_jax/demo_model): the machinery on random weights."""
    print("qwen3_jax demo: model 'tiny-dense' = a 2-layer Qwen3 with RANDOM weights (no trained demo model\n"
          "is installed: build it with experiments/hybrid_thinking/run.py --ship) and the real Qwen3\n"
          "tokenizer. Its replies are gibberish by design: the demo shows the pipeline (chat template,\n"
          "thinking / non-thinking modes and Qwen's sampling presets, streaming, token counts).\n", flush=True)
    from qwen3_jax.cli.main import main as cli

    args = ["chat", "--model", "tiny-dense", "--max-new-tokens", str(min(a.max_new_tokens, 32)),
            "--thinking-budget", "16", "--say", QUESTION, "--say", "/no_think", "--say", QUESTION]
    if not sys.stdin.isatty():
        args.append("--no-input")
    else:
        print("(after the scripted turns the chat is yours: /think, /no_think, /reset, /exit)\n", flush=True)
    return cli(args)


def main(argv=None) -> int:
    """Runs the demo; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m qwen3_jax.demo", description="chat demo on the shipped model")
    from qwen3_jax.api import demo_dir

    shipped = os.path.exists(os.path.join(demo_dir(), "config.json"))
    default = DEFAULT_MODEL if shipped else "tiny-dense"
    p.add_argument("--model", default=default, help=f"checkpoint directory or preset (default: {default})")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=None, help="seed of the questions (default: random)")
    a = p.parse_args(argv)
    seed = random.randrange(1 << 20) if a.seed is None else a.seed
    if a.model == "tiny-dense" and not shipped:
        return _random_weights_demo(a)
    from qwen3_jax.generate.session import load_chat_model

    if a.model == DEFAULT_MODEL:
        print("qwen3_jax demo: a small Qwen3 (about a million parameters) trained by this project's own\n"
              "recipe to do integer arithmetic, thinking step by step when asked and answering directly\n"
              "with /no_think. Ask it things like 'What is 4821 + 379?' or 'What is 37 * 86? /no_think'.",
              flush=True)
    model = load_chat_model(a.model)
    _scripted(model, seed, a.max_new_tokens)
    if not sys.stdin.isatty():
        return 0
    print("\n(the chat is yours: /think, /no_think, /reset, /exit)\n", flush=True)
    from qwen3_jax.cli.main import main as cli

    return cli(["chat", "--model", a.model, "--max-new-tokens", str(a.max_new_tokens)])


if __name__ == "__main__":
    sys.exit(main())
