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


@pytest.fixture(scope="session")
def small_tok():
    """A 320-id byte-level BPE with Qwen's added tokens and chat template, trained on synthetic chats."""
    from qwen3_jax.post import synthetic
    from qwen3_jax.text import chat
    from qwen3_jax.text.train_bpe import train_bpe

    texts = [chat.render(r["messages"], tools=r.get("tools"), add_generation_prompt=False)
             for r in synthetic.sft_records(300, seed=0)]
    # Chat markup is matched as added tokens; strip it so no merge spells one.
    for t in ("<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
              "<tool_response>", "</tool_response>"):
        texts = [x.replace(t, " ") for x in texts]
    return train_bpe(texts, 320)

