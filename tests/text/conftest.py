"""Fixtures for the text tests: one Qwen3 tokenizer per session, built into a temporary cache.

Building the tokenizer from the tiktoken ranks takes a few seconds, so it is
done once per session, into a temporary directory (never the user's cache).
"""

import pytest

from qwen3_jax.text import build
from qwen3_jax.text.tokenizer import CACHE_ENV, Tokenizer


@pytest.fixture(scope="session")
def tok_cache(tmp_path_factory):
    """A temporary cache directory, also exported as the cache env var."""
    path = tmp_path_factory.mktemp("qwen3_jax_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def tok(tok_cache):
    """The Qwen3 tokenizer built from qwen.tiktoken (no checkpoint)."""
    return Tokenizer.qwen3()


@pytest.fixture(scope="session")
def tiktoken_enc():
    """tiktoken's encoder on the same ranks, regex and added tokens: the reference."""
    import tiktoken
    specials = {content: build.NUM_BPE_TOKENS + i for i, (content, _) in enumerate(build.ADDED_TOKENS)}
    return tiktoken.Encoding("qwen3", pat_str=build.QWEN_PATTERN,
                             mergeable_ranks=build.load_ranks(), special_tokens=specials)


@pytest.fixture(scope="session")
def saved_dir(tok, tmp_path_factory):
    """A checkpoint-style tokenizer directory written by ``Tokenizer.save``."""
    return tok.save(tmp_path_factory.mktemp("qwen3_tok_dir"))
