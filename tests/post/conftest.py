"""Fixtures for the post-training tests: one Qwen3 tokenizer per session, built into a temporary cache."""

import pytest

from qwen3_jax.text.tokenizer import CACHE_ENV, Tokenizer


@pytest.fixture(scope="session")
def tok(tmp_path_factory):
    """The Qwen3 tokenizer built from qwen.tiktoken (no checkpoint), cached in a temp dir."""
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("qwen3_jax_cache")))
    yield Tokenizer.qwen3()
    mp.undo()
