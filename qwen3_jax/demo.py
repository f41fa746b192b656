"""`make demo` / `python -m qwen3_jax.demo`: the chat CLI on an embedded default model.

It asks one scripted question in thinking mode, switches with `/no_think`, and asks it again; then,
when stdin is a terminal, the chat goes on interactively (`/exit` quits). When stdin is not a
terminal it stops after the scripted turns.

The default model is the "tiny-dense" preset: a two-layer Qwen3 with random weights and the real
151,936-row vocabulary, paired with the real Qwen3 tokenizer. No trained demo model ships yet, so
its replies are gibberish; the demo shows the machinery (chat template, modes and their sampling
presets, streaming, token accounting), not answers. `--model` runs it on a real checkpoint.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_MODEL = "tiny-dense"
QUESTION = "What is the capital of France? Answer in one sentence."


def main(argv=None) -> int:
    """Runs the demo; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m qwen3_jax.demo", description="chat demo on an embedded model")
    p.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint directory or preset (default: tiny-dense)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    a = p.parse_args(argv)
    if a.model == DEFAULT_MODEL:
        print("qwen3_jax demo: model 'tiny-dense' = a 2-layer Qwen3 with RANDOM weights (no trained demo model\n"
              "ships yet) and the real Qwen3 tokenizer. Its replies are gibberish by design: the demo shows\n"
              "the pipeline (chat template, thinking / non-thinking modes and Qwen's sampling presets,\n"
              "streaming, token counts). Run it on a real checkpoint with --model DIR.\n", flush=True)
    from qwen3_jax.cli.main import main as cli

    args = ["chat", "--model", a.model, "--max-new-tokens", str(a.max_new_tokens), "--thinking-budget", "16",
            "--say", QUESTION, "--say", "/no_think", "--say", QUESTION]
    if not sys.stdin.isatty():
        args.append("--no-input")
    else:
        print("(after the scripted turns the chat is yours: /think, /no_think, /reset, /exit)\n", flush=True)
    return cli(args)


if __name__ == "__main__":
    sys.exit(main())
