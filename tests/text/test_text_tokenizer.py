"""Tokenizer: known Qwen3 encodings, added tokens, special ids, decoding, caching, save/load."""

import json
import time

import pytest

from qwen3_jax.text.tokenizer import Tokenizer

# Ids produced by the released Qwen3 tokenizer (tokenizer.json of Qwen/Qwen3-8B).
KNOWN = [
    ("Hello world", [9707, 1879]),
    ("Hello", [9707]),
    ("Hello, world! 123", [9707, 11, 1879, 0, 220, 16, 17, 18]),
    ("1+1=", [16, 10, 16, 28]),
    ("2+2=?", [17, 10, 17, 19884]),
    ("What is the capital of France?", [3838, 374, 279, 6722, 315, 9625, 30]),
    ("Hello, my name is Ryan.", [9707, 11, 847, 829, 374, 13646, 13]),
    ("Testing 123", [16451, 220, 16, 17, 18]),
    ("\n", [198]),
    ("\n\n", [271]),
]

# The added tokens of the released tokenizer.json, written out by hand (not taken from build.py).
ADDED = {
    151643: ("<|endoftext|>", True), 151644: ("<|im_start|>", True), 151645: ("<|im_end|>", True),
    151646: ("<|object_ref_start|>", True), 151647: ("<|object_ref_end|>", True),
    151648: ("<|box_start|>", True), 151649: ("<|box_end|>", True),
    151650: ("<|quad_start|>", True), 151651: ("<|quad_end|>", True),
    151652: ("<|vision_start|>", True), 151653: ("<|vision_end|>", True),
    151654: ("<|vision_pad|>", True), 151655: ("<|image_pad|>", True), 151656: ("<|video_pad|>", True),
    151657: ("<tool_call>", False), 151658: ("</tool_call>", False),
    151659: ("<|fim_prefix|>", False), 151660: ("<|fim_middle|>", False),
    151661: ("<|fim_suffix|>", False), 151662: ("<|fim_pad|>", False),
    151663: ("<|repo_name|>", False), 151664: ("<|file_sep|>", False),
    151665: ("<tool_response>", False), 151666: ("</tool_response>", False),
    151667: ("<think>", False), 151668: ("</think>", False),
}


@pytest.mark.parametrize("text,ids", KNOWN)
def test_known_encodings(tok, text, ids):
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text


def test_digits_are_single_tokens(tok):
    assert [tok.encode(str(d)) for d in range(10)] == [[15 + d] for d in range(10)]
    assert tok.encode("2025") == [17, 15, 17, 20]


def test_size_and_added_tokens(tok):
    assert len(tok) == 151669
    assert len(ADDED) == 26
    for token_id, (content, special) in ADDED.items():
        assert tok.token_to_id(content) == token_id
        assert tok.id_to_token(token_id) == content
        assert tok.encode(f"a{content}b") == [64, token_id, 65]  # matched atomically
        assert tok.is_special(token_id) is special
    assert tok.id_to_token(151669) is None


def test_special_ids(tok):
    assert (tok.endoftext_id, tok.im_start_id, tok.im_end_id) == (151643, 151644, 151645)
    assert (tok.think_id, tok.end_think_id) == (151667, 151668)
    assert tok.eos_token_ids == (151645, 151643)


def test_skip_special_tokens_keeps_think_and_tool_tags(tok):
    text = "<|im_start|>assistant\n<think>\nhm\n</think>\n\n<tool_call>\n{}\n</tool_call><|im_end|><|endoftext|>"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == (
        "assistant\n<think>\nhm\n</think>\n\n<tool_call>\n{}\n</tool_call>")


def test_batch_matches_single(tok):
    texts = ["Hello world", "", "你好，世界 🌍", "  x = [1, 2]\n\n\n", "<think>a</think>b"]
    batch = tok.encode_batch(texts)
    assert batch == [tok.encode(t) for t in texts]
    assert tok.decode_batch(batch) == texts


def test_token_bytes(tok):
    assert tok.token_bytes(9707) == b"Hello"
    assert tok.token_bytes(1879) == b" world"
    assert tok.token_bytes(198) == b"\n"
    assert tok.token_bytes(151667) == b"<think>"
    # Every byte on its own is a token whose bytes are that byte.
    single = {tok.token_bytes(i) for i in range(len(tok)) if len(tok.token_bytes(i)) == 1}
    assert single == {bytes([b]) for b in range(256)}


def test_normalizer_is_nfc(tok):
    decomposed = "e\u0301"  # e + combining acute -> é after NFC
    assert tok.encode(decomposed) == tok.encode("\u00e9")


def test_cache_is_reused_and_fast(tok, tok_cache):
    files = list(tok_cache.glob("qwen3-tokenizer-*.json"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    start = time.perf_counter()
    again = Tokenizer.qwen3()
    elapsed = time.perf_counter() - start
    assert files[0].stat().st_mtime_ns == mtime  # loaded, not rebuilt
    assert again.encode("Hello world") == [9707, 1879]
    assert elapsed < 1.5, elapsed  # building takes several seconds; loading well under one
    assert not list(tok_cache.glob("*.tmp"))  # atomic write left no temp file


def test_corrupt_cache_is_rebuilt(tmp_path, tok_cache):
    good = next(tok_cache.glob("qwen3-tokenizer-*.json"))
    bad = tmp_path / good.name
    bad.write_text(good.read_text(encoding="utf-8")[:1000], encoding="utf-8")  # truncated
    rebuilt = Tokenizer.qwen3(cache=tmp_path)
    assert rebuilt.encode("Hello world") == [9707, 1879]
    json.loads(bad.read_text(encoding="utf-8"))  # replaced by a complete file


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    from qwen3_jax.text.tokenizer import CACHE_ENV, cache_dir

    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "qwen3_jax"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"


def test_save_and_from_pretrained(tok, saved_dir):
    assert (saved_dir / "tokenizer.json").is_file()
    config = json.loads((saved_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["eos_token"] == "<|im_end|>" and config["pad_token"] == "<|endoftext|>"
    assert config["added_tokens_decoder"]["151668"]["content"] == "</think>"
    assert config["added_tokens_decoder"]["151657"]["special"] is False
    loaded = Tokenizer.from_pretrained(saved_dir)
    assert len(loaded) == 151669
    assert loaded.chat_template == tok.chat_template
    text = "Hello, 世界! <think>x</think> 12345"
    assert loaded.encode(text) == tok.encode(text)
    assert Tokenizer.from_pretrained(saved_dir / "tokenizer.json").encode(text) == tok.encode(text)


def test_tokenizer_json_matches_release_pipeline(tok):
    doc = json.loads(tok.backend.to_str())
    assert doc["normalizer"] == {"type": "NFC"}
    split, byte_level = doc["pre_tokenizer"]["pretokenizers"]
    assert split["pattern"]["Regex"] == (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    assert split["behavior"] == "Isolated" and byte_level["type"] == "ByteLevel"
    assert len(doc["model"]["vocab"]) == 151643
    assert len(doc["model"]["merges"]) == 151643 - 256  # one merge per non-byte token
    assert doc["model"]["type"] == "BPE" and doc["decoder"]["type"] == "ByteLevel"
    assert all(not t["lstrip"] and not t["rstrip"] and not t["normalized"] for t in doc["added_tokens"])
