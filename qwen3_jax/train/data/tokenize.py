"""Documents to token ids inside the grain pipeline, and the per-source token-length filter."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from qwen3_jax.train.data.config import DataError


class Tokenize:
    """A grain map: a text (or, pre-tokenized, an id array) to int32 ids, EOS appended.

    Args:
      tokenizer: anything with `encode(str) -> list[int]` and `endoftext_id` (`qwen3_jax.Tokenizer`).
      append_eos: end each document with `tokenizer.endoftext_id`.
    """

    def __init__(self, tokenizer: Any, append_eos: bool = True):
        self._tokenizer = tokenizer
        self._eos = [int(tokenizer.endoftext_id)] if append_eos else []

    def __call__(self, doc: str | np.ndarray) -> np.ndarray:
        if isinstance(doc, str):
            ids = self._tokenizer.encode(doc) + self._eos
            return np.asarray(ids, np.int32)
        ids = np.asarray(doc, np.int32)
        return np.concatenate([ids, np.asarray(self._eos, np.int32)]) if self._eos else ids


class LengthFilter:
    """A grain filter keeping documents of `min_tokens <= len <= max_tokens` (and never empty ones).

    A source whose documents all fall outside the bounds would make the pipeline search forever;
    after `give_up` rejections in a row (about two passes over the source's shard) it raises.
    """

    def __init__(self, label: str, min_tokens: int, max_tokens: int | None, give_up: int):
        self._label = label
        self._min = max(min_tokens, 1)
        self._max = max_tokens
        self._give_up = give_up
        self._streak = 0
        self._lock = threading.Lock()

    def __call__(self, ids: np.ndarray) -> bool:
        n = len(ids)
        keep = n >= self._min and (self._max is None or n <= self._max)
        with self._lock:
            self._streak = 0 if keep else self._streak + 1
            if self._streak >= self._give_up:
                raise DataError(f"data source {self._label}: no document has between {self._min} and "
                                f"{self._max if self._max is not None else 'any number of'} tokens "
                                f"({self._streak} rejected in a row)")
        return keep

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
