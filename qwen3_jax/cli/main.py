"""`qwen3-jax <command> ...`: a thin dispatcher over one module per subcommand.

Each subcommand module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Modules are imported only when their command runs, so `qwen3-jax --help` stays fast.
Errors meant for the user (`UserError`, and the library's ValueError/FileNotFoundError subclasses
listed below) print one message to stderr and exit 2 instead of a traceback.

Ctrl-C exits with status 130. Run as the `qwen3-jax` program (`argv` None), an interrupted or failed
command ends with `os._exit` once its own cleanup is done: XLA's worker threads may still be running a
computation whose result nobody will read, and tearing the interpreter down under them crashed
(SIGSEGV in about a third of interrupted `generate` runs); after a failed Orbax read, Orbax's
background thread may still post to its closed event loop and print a traceback under the one-line
error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {
    "convert": "qwen3_jax.cli.convert",
    "export": "qwen3_jax.cli.export",
    "chat": "qwen3_jax.cli.chat",
    "generate": "qwen3_jax.cli.generate",
    "presets": "qwen3_jax.cli.presets",
    "pretokenize": "qwen3_jax.cli.pretokenize",
    "train": "qwen3_jax.cli.train",
    "plan": "qwen3_jax.cli.plan",
    "sft": "qwen3_jax.cli.sft",
    "grpo": "qwen3_jax.cli.grpo",
    "distill": "qwen3_jax.cli.distill",
}


class UserError(Exception):
    """A problem with the user's input: printed without a traceback, exit status 2."""


def _available():
    out = {}
    for name, mod in COMMANDS.items():
        if importlib.util.find_spec(mod) is not None:
            out[name] = mod
    return out


def main(argv=None) -> int:
    from qwen3_jax.cli import interrupts

    if argv is None:  # the program: a Ctrl-C swallowed by an ignored-exception callback still counts
        interrupts.install()
    rc = _main(argv)
    if argv is None and rc == 0 and interrupts.pending():
        print("qwen3-jax: interrupted", file=sys.stderr)
        rc = 130
    if rc in (2, 130) and argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _main(argv=None) -> int:
    available = _available()
    parser = argparse.ArgumentParser(prog="qwen3-jax", description="Qwen3 in JAX: convert, export, chat, generate.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, modname in available.items():
        mod = importlib.import_module(modname)
        modules[name] = mod
        p = sub.add_parser(name, help=getattr(mod, "HELP", ""), description=getattr(mod, "HELP", ""))
        mod.add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from qwen3_jax.checkpoint.safetensors_io import CheckpointError
    from qwen3_jax.config import ConfigError

    try:
        return int(modules[args.command].run(args) or 0)
    except (UserError, CheckpointError, ConfigError, FileNotFoundError, FileExistsError, PermissionError) as e:
        print(f"qwen3-jax {args.command}: error: {e}", file=sys.stderr)
        # Libraries may still log the failure (Orbax's unretrieved asyncio tasks, at exit): it is reported.
        import logging

        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        return 2
    except KeyboardInterrupt:
        print(f"qwen3-jax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run the imported module's main: as __main__ this file's UserError would be a second class,
    # distinct from the one the subcommands raise.
    from qwen3_jax.cli.main import main as _main

    sys.exit(_main())
