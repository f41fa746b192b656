"""Loading a model together with its tokenizer, for the CLI, the demo and the notebook.

`--model` accepts whatever `qwen3_jax.load` accepts (a Hugging Face directory, an Orbax directory
written by `qwen3-jax convert`, a preset name). The tokenizer is the directory's `tokenizer.json`
when there is one, else the Qwen3 tokenizer built from Qwen's ranks (`Tokenizer.qwen3()`).
"""

from __future__ import annotations

import os

from qwen3_jax.generate.sampling import Sampling


def load_chat_model(spec: str, dtype: str = "auto", mesh: str | None = None, tokenizer=None):
    """Loads a model and settles its `.tokenizer` (`qwen3_jax.load` gives `.source_dir`).

    Args:
      spec: checkpoint directory or preset name.
      dtype: "auto", "float32", "bfloat16" or "float16".
      mesh: optional mesh spec such as "data=2,tensor=4".
      tokenizer: a `Tokenizer` to use instead of the automatic choice.

    Returns:
      The `qwen3_jax.Model`, with `model.tokenizer` and `model.source_dir` (None for presets).

    Raises:
      FileNotFoundError: no such checkpoint or preset.
      ValueError: a bad mesh spec, a tokenizer with more ids than the model has rows, or an
        unreadable generation_config.json (checked here, so a chat session fails before it starts).
    """
    import qwen3_jax
    from qwen3_jax.generate.chat import resolve_tokenizer
    from qwen3_jax.generate.engine import default_stop_tokens

    the_mesh = qwen3_jax.make_mesh(mesh) if mesh else None
    model = qwen3_jax.load(spec, dtype, mesh=the_mesh)
    model.tokenizer = resolve_tokenizer(model, tokenizer)  # the directory's, else Qwen3's; checked to fit
    default_stop_tokens(model.config, model.source_dir)
    return model


def sampling_overrides(args) -> dict:
    """The sampling fields set on the command line (None for the ones left to the preset)."""
    names = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "repetition_penalty", "seed")
    return {n: getattr(args, n, None) for n in names}


def check_overrides(overrides: dict) -> None:
    """Validates sampling values before any model is loaded (raises ValueError)."""
    Sampling(**{k: v for k, v in overrides.items() if v is not None})


def add_common_arguments(p) -> None:
    """Arguments shared by `qwen3-jax chat` and `qwen3-jax generate`."""
    from qwen3_jax.api import demo_dir

    if os.path.exists(os.path.join(demo_dir(), "config.json")):
        p.add_argument("--model", default="demo",
                       help="checkpoint directory or preset name (default: demo, the shipped arithmetic model)")
    else:  # no trained demo model installed (experiments/hybrid_thinking/run.py --ship)
        p.add_argument("--model", required=True, help="checkpoint directory or preset name (e.g. tiny-dense)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--mesh", default=None, help='device mesh, e.g. "data=2,tensor=4" (default: one device)')
    p.add_argument("--no-think", action="store_true", help="non-thinking mode (renders the empty think block)")
    p.add_argument("--thinking-budget", type=int, default=None, metavar="N",
                   help="most reasoning tokens before the stop-thinking text is inserted")
    p.add_argument("--max-new-tokens", type=int, default=None, metavar="N")
    p.add_argument("--system", default=None, help="system prompt")
    g = p.add_argument_group("sampling (default: Qwen's preset for the mode; temperature 0 is greedy)")
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--min-p", type=float, default=None)
    g.add_argument("--presence-penalty", type=float, default=None)
    g.add_argument("--repetition-penalty", type=float, default=None)
    g.add_argument("--seed", type=int, default=None)


def check_common(args, error) -> None:
    """Validates the shared arguments; calls `error(message)` (which raises) on a bad one."""
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        error(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.thinking_budget is not None and args.thinking_budget < 0:
        error(f"--thinking-budget must be >= 0, got {args.thinking_budget}")
    try:
        check_overrides(sampling_overrides(args))
    except ValueError as e:
        error(str(e))
