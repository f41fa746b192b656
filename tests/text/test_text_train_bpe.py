"""A small BPE trained by ``train_bpe`` keeps Qwen's pipeline, added tokens and chat format.

The reference for "a real Hugging Face tokenizer directory" is transformers'
``AutoTokenizer`` reading what ``Tokenizer.save`` wrote.
"""

import copy
import random
import unicodedata

import pytest

from qwen3_jax.text import build, chat
from qwen3_jax.text.tokenizer import Tokenizer
from qwen3_jax.text.train_bpe import MIN_VOCAB_SIZE, train_bpe


def _corpus(n=400, seed=0):
    rng = random.Random(seed)
    words = ["what", "is", "the", "answer", "carry", "digit", "sum", "hello", "think", "step"]
    out = []
    for _ in range(n):
        a, b = rng.randrange(10_000), rng.randrange(10_000)
        out.append(f"What is {a} + {b}? " + " ".join(rng.choice(words) for _ in range(8)) + f" {a + b}.")
    return out


@pytest.fixture(scope="module")
def small():
    return train_bpe(_corpus(), 400)


def test_ids_layout(small):
    n = len(small) - len(build.ADDED_TOKENS)
    assert 256 < n <= 400 - len(build.ADDED_TOKENS)
    for i, (content, special) in enumerate(build.ADDED_TOKENS):
        assert small.token_to_id(content) == n + i
        assert small.is_special(n + i) == special
    assert small.eos_token_ids == (small.im_end_id, small.endoftext_id)
    # The config's added-token table names the same ids (transformers reads it).
    decoder = small.config["added_tokens_decoder"]
    assert decoder[str(small.think_id)]["content"] == "<think>"


def test_merges_learned_from_text(small):
    # " the" is frequent in the corpus: learned as one token; digits stay single (Qwen's regex).
    assert len(small.encode(" the")) == 1
    assert small.encode("4821") == [small.token_to_id(d) for d in "4821"]


@pytest.mark.parametrize("text", ["", "plain ascii", "café naïve Å", "e\u0301", "日本語 🙂\n\t x",
                                  "<|im_start|>user\nhi<|im_end|>", "\x00\x7f\xff"])
def test_roundtrip_any_text(small, text):
    # Byte-level: any string survives (up to the NFC normaliser), unseen characters included.
    assert small.decode(small.encode(text)) == unicodedata.normalize("NFC", text)


def test_chat_render_encode_parse(small):
    messages = [{"role": "user", "content": "What is 37 * 86? /think"},
                {"role": "assistant", "content": "3182", "reasoning_content": "37 * 86 = 3182"},
                {"role": "user", "content": "And 2 + 2? /no_think"}]
    text = chat.render(messages, add_generation_prompt=True, enable_thinking=False)
    ids = small.encode(text)
    # The template drops reasoning of turns before the last user query; the
    # non-thinking generation prompt adds the empty think block.
    assert ids.count(small.im_start_id) == 4 and ids.count(small.think_id) == 1
    assert text.endswith("<think>\n\n</think>\n\n")
    assert small.decode(ids) == text
    reply = chat.parse(small.encode("<think>\n2 + 2 = 4\n</think>\n\n4<|im_end|>"), small)
    assert (reply.reasoning, reply.content) == ("2 + 2 = 4", "4")


def test_saved_dir_is_a_transformers_tokenizer(small, tmp_path):
    import transformers
    small.save(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    messages = [{"role": "user", "content": "What is 4821 + 379?"}]
    text = chat.render(messages, add_generation_prompt=True)
    assert again.encode(text) == small.encode(text)
    assert hf(text, add_special_tokens=False)["input_ids"] == small.encode(text)
    assert hf.apply_chat_template(copy.deepcopy(messages), tokenize=False, add_generation_prompt=True) == text
    assert len(hf) == len(small)


@pytest.mark.parametrize("bad", [MIN_VOCAB_SIZE - 1, 0, -5, 300.0, "512", True, None])
def test_bad_vocab_size(bad):
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(["abc"], bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5, None])
def test_bad_min_frequency(bad):
    with pytest.raises(ValueError, match="min_frequency"):
        train_bpe(["abc"], 400, min_frequency=bad)
