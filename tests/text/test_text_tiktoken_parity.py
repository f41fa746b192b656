"""Our tokenizers-based BPE gives exactly tiktoken's ids on the same ranks and regex.

tiktoken merges by rank; we merge by a merge list derived from the ranks, so
this is the check that the derivation is right. The corpus (> 200 KB) mixes
stdlib source code and docs with deterministic generated text: Chinese, Japanese,
Korean, other scripts, emoji (incl. ZWJ sequences and flags), numbers, and runs
of whitespace. tiktoken does no normalisation, so its input is NFC-normalised
first (our normaliser is NFC).
"""

import random
import sysconfig
import unicodedata
from pathlib import Path

import pytest


def _stdlib_text(limit):
    root = Path(sysconfig.get_paths()["stdlib"])
    out, size = [], 0
    for name in ["textwrap.py", "difflib.py", "argparse.py", "pydoc_data/topics.py", "this.py",
                 "json/decoder.py", "email/_header_value_parser.py", "unicodedata.py", "locale.py"]:
        path = root / name
        if path.is_file() and size < limit:
            text = path.read_text(encoding="utf-8", errors="replace")[: limit - size]
            out.append(text)
            size += len(text)
    return out


def _generated(seed, n_docs):
    rng = random.Random(seed)
    ranges = {
        "cjk": (0x4E00, 0x9FFF), "hiragana": (0x3041, 0x3096), "katakana": (0x30A1, 0x30FA),
        "hangul": (0xAC00, 0xD7A3), "cyrillic": (0x0410, 0x044F), "greek": (0x0391, 0x03C9),
        "arabic": (0x0621, 0x064A), "devanagari": (0x0905, 0x0939), "thai": (0x0E01, 0x0E2E),
        "emoji": (0x1F300, 0x1FAFF), "latin1": (0x00C0, 0x00FF),
    }
    punct = ["，", "。", "、", "！", "？", "：", "「", "」", ",", ".", "!", "?", "'s", "'LL", "'ve", "…", "—"]
    spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\n    ", "\t\t\n", "        "]
    extras = ["👨‍👩‍👧‍👦", "🇫🇷", "👍🏽", "❤️", "1️⃣", "e\u0301", "ﬁ", "Ａ１", "①", "½", "٣٤", "x²"]
    docs = []
    for _ in range(n_docs):
        parts = []
        for _ in range(rng.randint(50, 150)):
            r = rng.random()
            if r < 0.45:
                lo, hi = ranges[rng.choice(list(ranges))]
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8))))
            elif r < 0.6:
                parts.append(str(rng.choice([rng.randint(0, 10**9), rng.random() * 1e4, -rng.randint(0, 99)])))
            elif r < 0.75:
                parts.append(rng.choice(punct))
            elif r < 0.8:
                parts.append(rng.choice(extras))
            else:
                parts.append(rng.choice(["the", "Hello", "don't", "HTTP", "x_1", "CamelCase", "über"]))
            parts.append(rng.choice(spaces) if rng.random() < 0.5 else "")
        docs.append("".join(parts))
    return docs


@pytest.fixture(scope="module")
def corpus():
    docs = _stdlib_text(300_000) + _generated(1234, 400)
    # Added tokens inside text: both sides must match them atomically.
    docs.append("x<|im_start|>user\nhi<|im_end|>\n<think>\n\n</think>\n\n<tool_call>{}</tool_call>")
    docs = [unicodedata.normalize("NFC", d) for d in docs]
    assert sum(len(d.encode("utf-8")) for d in docs) > 200_000
    return docs


def test_same_ids_as_tiktoken(tok, tiktoken_enc, corpus):
    ours = tok.encode_batch(corpus)
    for i, (doc, got) in enumerate(zip(corpus, ours)):
        want = tiktoken_enc.encode(doc, allowed_special="all")
        if got != want:
            k = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            pytest.fail(f"doc {i} differs at token {k}: ours {got[k:k + 5]} tiktoken {want[k:k + 5]} "
                        f"around {tiktoken_enc.decode(want[max(0, k - 3):k + 5])!r}")
    assert sum(map(len, ours)) > 50_000


def test_decode_matches_tiktoken(tok, tiktoken_enc, corpus):
    for doc in corpus[-50:]:
        ids = tiktoken_enc.encode(doc, allowed_special="all")
        assert tok.decode(ids) == tiktoken_enc.decode(ids) == doc
