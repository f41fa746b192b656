"""`qwen3-jax generate`: one reply to one prompt, streamed as text or printed as JSON.

    qwen3-jax generate --model ckpt/qwen3-8b --prompt "Why is the sky blue?" [--no-think] [--json]

The prompt goes through the chat template (`--raw` sends it as plain text instead). `--json` prints
reasoning, content, tool calls, finish reason, sampling and token counts as one JSON object.
"""

from __future__ import annotations

import json
import sys

HELP = "generate a reply to one prompt (streamed, or --json with reasoning, content and token counts)"
DEFAULT_MAX_NEW = 1024


def add_arguments(p):
    from qwen3_jax.generate.session import add_common_arguments

    add_common_arguments(p)
    p.add_argument("--prompt", required=True, help='the user message ("-" reads it from stdin)')
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    p.add_argument("--raw", action="store_true", help="no chat template: continue the prompt text as is")


def _raw(model, args, overrides) -> int:
    from qwen3_jax.generate.chat import choose_sampling

    tok = model.tokenizer
    ids = tok.encode(args.prompt)
    if not ids:
        raise ValueError("the prompt is empty")
    sampling = choose_sampling(False, None, **overrides)
    out = model.generate([ids], max_new_tokens=args.max_new_tokens or DEFAULT_MAX_NEW, sampling=sampling)[0]
    text = tok.decode(out, skip_special_tokens=True)
    if args.json:
        print(json.dumps({"text": text, "ids": out, "usage": {"prompt_tokens": len(ids), "completion_tokens": len(out)}},
                         ensure_ascii=False))
    else:
        print(text)
    return 0


def run(args) -> int:
    from qwen3_jax.cli.main import UserError
    from qwen3_jax.generate.session import check_common, load_chat_model, sampling_overrides

    def error(msg):
        raise UserError(msg)

    from qwen3_jax.cli.chat import not_utf8

    check_common(args, error)
    if args.prompt == "-":
        if sys.stdin is None:
            error("--prompt - reads stdin, but stdin is closed")
        try:
            args.prompt = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as e:
            error(f"--prompt -: stdin is not UTF-8 text ({e.reason} at byte {e.start})")
    for name in ("prompt", "system"):
        value = getattr(args, name)
        if value is not None and not_utf8(value):
            error(f"--{name} {value.encode('utf-8', 'surrogateescape')!r} is not UTF-8 text")
    if not args.prompt.strip():
        error("--prompt is empty")
    overrides = sampling_overrides(args)
    try:
        model = load_chat_model(args.model, args.dtype, args.mesh)
        if args.raw:
            return _raw(model, args, overrides)
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
            {"role": "user", "content": args.prompt}]
        kw = dict(enable_thinking=not args.no_think, thinking_budget=args.thinking_budget,
                  max_new_tokens=args.max_new_tokens or DEFAULT_MAX_NEW)
        if args.json:
            result = model.chat(messages, **kw, **overrides)
            print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
            return 0
        from qwen3_jax.cli.chat import Printer, stream_reply

        result = stream_reply(model, messages, Printer(), overrides=overrides, **kw)
        return 0 if result is not None else 130
    except ValueError as e:  # prompt too long, bad mesh spec, tokenizer/model mismatch
        raise UserError(str(e)) from None
