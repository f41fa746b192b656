"""Ctrl-C for the `qwen3-jax` program: a KeyboardInterrupt that cannot be lost.

Python raises the KeyboardInterrupt of a SIGINT in whatever Python code runs next. When that is a
callback whose exceptions are ignored (jax's garbage-collection hook, a `__del__`), the interrupt
was printed as "Exception ignored" and dropped, and a streamed `generate` ran on to the end with
status 0. The program's handler therefore also records the Ctrl-C: streaming output calls `check()`
before each write (raising it again there), and `main` turns a command that returns normally after
an unhandled Ctrl-C into status 130. Code that handles a Ctrl-C itself (the chat prompt) calls
`clear()`. Such a swallowed KeyboardInterrupt is no longer printed.
"""

from __future__ import annotations

import signal
import sys
import threading

_pending = False


def _handler(signum, frame):
    global _pending
    _pending = True
    raise KeyboardInterrupt


def _unraisable(info, _default=sys.unraisablehook) -> None:
    # A Ctrl-C raised inside an ignored-exception callback: recorded by the handler, not a crash to print.
    if info.exc_type is not KeyboardInterrupt:
        _default(info)


def install() -> None:
    """Makes Ctrl-C raise KeyboardInterrupt and remember it (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handler)
        sys.unraisablehook = _unraisable


def pending() -> bool:
    """True when a Ctrl-C came and nobody has handled it."""
    return _pending


def clear() -> None:
    """Marks the last Ctrl-C as handled."""
    global _pending
    _pending = False


def check() -> None:
    """Raises KeyboardInterrupt again if a Ctrl-C is pending (its first raise may have been swallowed)."""
    if _pending:
        clear()
        raise KeyboardInterrupt
