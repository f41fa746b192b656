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
