"""Shared pieces of the data-pipeline tests: a byte tokenizer, corpora, and batch decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

EOS = 256


class ByteTokenizer:
    """Token ids = UTF-8 bytes, EOS = 256: exact, instant, and easy to decode in assertions."""

    endoftext_id = EOS

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


def doc_text(i: int, length: int) -> str:
    """A document that names itself: 'd0042 xxxx...' of exactly `length` bytes (>= 6)."""
    head = f"d{i:04d} "
    return head + "abcdefghij"[i % 10] * (length - len(head))


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({field: t, "other": 1}) + "\n")
    return path


def segments(batch: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The token runs of every segment of every row, in row order (padding dropped)."""
    out = []
    for tokens, seg in zip(batch["tokens"], batch["segment_ids"]):
        for s in np.unique(seg[seg > 0]):
            out.append(tokens[seg == s])
    return out


def seg_text(tokens: np.ndarray) -> str:
    """A segment decoded back to text (the trailing EOS dropped)."""
    ids = tokens[:-1] if len(tokens) and tokens[-1] == EOS else tokens
    return bytes(int(t) for t in ids).decode("utf-8")


def batches(it, n: int) -> list[dict[str, np.ndarray]]:
    return [next(it) for _ in range(n)]


def drain(it) -> list[dict[str, np.ndarray]]:
    return list(it)
