"""`qwen3-jax chat`: an interactive chat on a model, reasoning shown dimmed.

Lines typed at the prompt are user turns. Commands: `/think` and `/no_think` alone switch the mode
for the next turns (inside a message they are Qwen's soft switches and pass through to the model),
`/reset` clears the history, `/exit` quits. Ctrl-C stops the answer being written, not the program.
When stdin is not a terminal, each input line is one turn (no prompt is printed). `--say TEXT`
(repeatable) plays scripted turns first; the demo uses it.
"""

from __future__ import annotations

import os
import sys
import time

from qwen3_jax.cli import interrupts

HELP = "chat with a model (/think, /no_think, /reset, /exit; Ctrl-C stops an answer)"
DEFAULT_MAX_NEW = 4096


def add_arguments(p):
    from qwen3_jax.generate.session import add_common_arguments

    add_common_arguments(p)
    p.add_argument("--say", action="append", default=[], metavar="TEXT",
                   help="a scripted user turn played before reading input (repeatable)")
    p.add_argument("--no-input", action="store_true", help="do not read stdin after the scripted turns")


class Printer:
    """Writes reasoning (dimmed on a terminal, labelled otherwise) and content as they stream."""

    def __init__(self, out=None, color: bool | None = None):
        self.out = out or sys.stdout
        if color is None:
            color = hasattr(self.out, "isatty") and self.out.isatty() and not os.environ.get("NO_COLOR")
        self.color = color
        self.part = None

    def write(self, kind: str, text: str) -> None:
        """Prints new text of one part ("reasoning" or "content")."""
        interrupts.check()  # a Ctrl-C whose KeyboardInterrupt was swallowed stops here
        if not text:
            return
        if kind != self.part:
            if self.color:
                self.out.write("\x1b[0m" + ("\n" if self.part else "") + ("\x1b[2m" if kind == "reasoning" else ""))
            else:
                self.out.write(("\n" if self.part else "") + f"[{'thinking' if kind == 'reasoning' else 'answer'}] ")
            self.part = kind
        self.out.write(text)
        self.out.flush()

    def note(self, text: str) -> None:
        """Prints a status line (dimmed on a terminal)."""
        self.end()
        self.out.write((f"\x1b[2m{text}\x1b[0m" if self.color else text) + "\n")
        self.out.flush()

    def end(self) -> None:
        """Closes the current part."""
        if self.part is not None:
            self.out.write(("\x1b[0m" if self.color else "") + "\n")
            self.part = None


def stream_reply(model, messages, printer: Printer, *, enable_thinking=True, thinking_budget=None,
                 max_new_tokens=DEFAULT_MAX_NEW, overrides=None):
    """Streams one reply to `printer`; returns the ChatResult (None when interrupted with Ctrl-C)."""
    from qwen3_jax.generate.chat import chat_stream

    t0 = time.perf_counter()
    result = None
    try:
        for ev in chat_stream(model, messages, enable_thinking=enable_thinking, thinking_budget=thinking_budget,
                              max_new_tokens=max_new_tokens, **(overrides or {})):
            if ev.kind in ("reasoning", "content"):
                printer.write(ev.kind, ev.text)
            elif ev.kind == "tool_call":
                printer.write("content", f"<tool_call>{ev.text}</tool_call>")
            elif ev.kind == "retract":
                printer.note("[the text above was reasoning after all]")
            elif ev.kind == "done":
                result = ev.result
    except KeyboardInterrupt:
        interrupts.clear()
        printer.note("[stopped]")
        return None
    dt = time.perf_counter() - t0
    u = result.usage
    s = result.sampling
    how = "greedy" if s.greedy else f"T={s.temperature:g} top_p={s.top_p:g} top_k={s.top_k} min_p={s.min_p:g}"
    printer.note(f"[{'thinking' if result.thinking else 'non-thinking'} ({how}): {u.prompt_tokens} prompt, "
                 f"{u.reasoning_tokens} reasoning + {u.content_tokens} content tokens, {dt:.1f} s, "
                 f"{result.finish_reason}]")
    return result


def not_utf8(text: str) -> bool:
    """Whether `text` came from bytes that are not UTF-8 (Python keeps them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _lines(args, interactive: bool):
    yield from args.say
    if args.no_input or sys.stdin is None:  # stdin closed (`<&-`): nothing to read
        return
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # a bad line is reported, not fatal
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except (EOFError, OSError, ValueError):  # end of input, or a closed/unreadable stdin
            return
        if not interactive and line == "":
            return
        yield line.rstrip("\n")


def repl(model, args, out=None) -> int:
    """Runs the chat loop on a loaded model (see the module docstring)."""
    from qwen3_jax.generate.session import sampling_overrides

    interactive = sys.stdin is not None and sys.stdin.isatty() and not args.no_input
    printer = Printer(out)
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(system)
    enable_thinking = not args.no_think
    max_new = args.max_new_tokens or DEFAULT_MAX_NEW
    lines = _lines(args, interactive)
    while True:
        try:
            line = next(lines)
        except StopIteration:
            break
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh prompt, not an exit
            interrupts.clear()
            printer.out.write("\n")
            continue
        cmd = line.strip()
        if not cmd:
            continue
        if not_utf8(line):
            printer.note("error: this line is not UTF-8 text; it was skipped")
            continue
        if not interactive or args.say:
            printer.out.write(f"> {cmd}\n")
        if cmd in ("/exit", "/quit"):
            break
        if cmd == "/reset":
            messages = list(system)
            printer.note("[history cleared]")
            continue
        if cmd in ("/think", "/no_think"):
            enable_thinking = cmd == "/think"
            printer.note(f"[{'thinking' if enable_thinking else 'non-thinking'} mode]")
            continue
        messages.append({"role": "user", "content": line})
        try:
            result = stream_reply(model, messages, printer, enable_thinking=enable_thinking,
                                  thinking_budget=args.thinking_budget, max_new_tokens=max_new,
                                  overrides=sampling_overrides(args))
        except ValueError as e:  # e.g. the conversation outgrew the context: say so, keep chatting
            printer.note(f"error: {e}")
            result = None
        if result is None:
            messages.pop()  # an interrupted answer leaves no trace in the history
        else:
            # The template drops reasoning from history anyway; keep only the answer.
            messages.append({"role": "assistant", "content": result.content})
    return 0


def run(args) -> int:
    from qwen3_jax.cli.main import UserError
    from qwen3_jax.generate.session import check_common, load_chat_model

    def error(msg):
        raise UserError(msg)

    check_common(args, error)
    bad = [t for t in args.say if not_utf8(t)]
    if bad:
        error(f"--say {bad[0].encode('utf-8', 'surrogateescape')!r} is not UTF-8 text")
    try:
        model = load_chat_model(args.model, args.dtype, args.mesh)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        return repl(model, args)
    except ValueError as e:  # a prompt too long for the context, a malformed conversation
        raise UserError(str(e)) from None
