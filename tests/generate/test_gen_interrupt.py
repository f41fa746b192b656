"""Ctrl-C during a streamed `qwen3-jax generate` (the installed program): exit 130, no crash.

Before the fix the interpreter was torn down under XLA's still-running decode threads and died with
SIGSEGV in about a third of the runs; several interrupts at different moments are tried.
"""

import os

import pytest

from qwen3_jax.testing import interrupt_cli
from qwen3_jax.text.tokenizer import CACHE_ENV


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tok_cache"))


@pytest.mark.parametrize("after_bytes", [1, 40, 200])
def test_ctrl_c_while_streaming_exits_130(cache, monkeypatch, after_bytes):
    monkeypatch.setenv(CACHE_ENV, cache)  # the tokenizer is built here, not in ~/.cache
    seen = bytearray()

    def streaming(p):
        os.set_blocking(p.stdout.fileno(), False)
        chunk = p.stdout.read(4096)
        if chunk:
            seen.extend(chunk)
        return len(seen) >= after_bytes

    rc, _, err = interrupt_cli("generate", "--model", "tiny-dense", "--prompt", "hi", "--max-new-tokens", "5000",
                               "--temperature", "1", when=streaming)
    assert rc == 130, (rc, err[-2000:])
    assert "Traceback" not in err and "Segmentation" not in err


def test_a_ctrl_c_swallowed_by_a_callback_is_raised_at_the_next_write():
    """The flaky case: SIGINT's KeyboardInterrupt raised inside a callback whose exceptions Python
    ignores (jax's gc hook, here a __del__) is dropped; the program's handler remembers it, the next
    streamed write raises it again, and the dropped exception is not printed."""
    import io
    import signal
    import sys

    from qwen3_jax.cli import interrupts
    from qwen3_jax.cli.chat import Printer

    printed = []

    class Dropped:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs here, inside __del__
                pass

    old_handler, old_hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
    try:
        interrupts.install()
        hook = sys.unraisablehook
        sys.unraisablehook = lambda info: (printed.append(info.exc_type), hook(info))
        Dropped()  # its KeyboardInterrupt is swallowed
        assert interrupts.pending() and printed == [KeyboardInterrupt]
        out = io.StringIO()
        with pytest.raises(KeyboardInterrupt):
            Printer(out, color=False).write("content", "more text")
        assert out.getvalue() == "" and not interrupts.pending()
        Printer(out, color=False).write("content", "ok")  # handled: writing goes on
        assert out.getvalue().endswith("ok")
    finally:
        signal.signal(signal.SIGINT, old_handler)
        sys.unraisablehook = old_hook
        interrupts.clear()
