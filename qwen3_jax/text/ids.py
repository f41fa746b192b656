"""Checking token-id inputs: what `generate`, `logits` and the stop tokens accept.

Ids must be integers (Python ints or NumPy integer scalars/arrays). Floats are refused even when
integral: a float id is almost always a bug upstream (ids that went through a float array), and
truncating it silently would generate from the wrong tokens. Errors are one line naming the input.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np


def _kind(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of dtype {x.dtype} and shape {list(x.shape)}"
    return f"a {type(x).__name__} ({x!r:.40})" if isinstance(x, (str, bytes)) else f"a {type(x).__name__}"


def token_ids(seq: Any, what: str, vocab_size: int | None = None) -> list[int]:
    """A sequence of token ids as a list of ints.

    Args:
      seq: list/tuple of ints or a 1-D integer array.
      what: how to name the input in errors ("prompt 0", "stop_tokens").
      vocab_size: when given, ids must lie in [0, vocab_size).

    Raises:
      ValueError: `seq` is a string, not a sequence, holds non-integers or out-of-range ids.
    """
    if isinstance(seq, (str, bytes)):
        raise ValueError(f"{what} must be a list of token ids, got {_kind(seq)}; encode text with the tokenizer first")
    if isinstance(seq, np.ndarray):
        if seq.ndim != 1:
            raise ValueError(f"{what} must be a 1-D list of token ids, got {_kind(seq)}")
        if not np.issubdtype(seq.dtype, np.integer):
            raise ValueError(f"{what} must hold integer token ids, got {_kind(seq)}")
        ids = [int(i) for i in seq]
    elif isinstance(seq, Sequence):
        bad = [(j, x) for j, x in enumerate(seq) if isinstance(x, bool) or not isinstance(x, numbers.Integral)]
        if bad:
            j, x = bad[0]
            raise ValueError(f"{what} must hold integer token ids; item {j} is {x!r} ({type(x).__name__})")
        ids = [int(i) for i in seq]
    else:
        raise ValueError(f"{what} must be a list of token ids, got {_kind(seq)}")
    if vocab_size is not None and ids and (min(ids) < 0 or max(ids) >= vocab_size):
        bad_id = min(ids) if min(ids) < 0 else max(ids)
        raise ValueError(f"{what}: token id {bad_id} is outside the model's vocabulary [0, {vocab_size})")
    return ids


def prompt_batch(prompts: Any, vocab_size: int) -> list[list[int]]:
    """A batch of prompts (a list of token-id lists) as lists of ints; each prompt non-empty."""
    if isinstance(prompts, (str, bytes)):
        raise ValueError(f"prompts must be a list of token-id lists, got {_kind(prompts)}; encode text with the "
                         "tokenizer, or use model.chat for messages")
    if isinstance(prompts, np.ndarray):
        if prompts.ndim != 2:
            raise ValueError(f"prompts must be a list of token-id lists (or a 2-D array), got {_kind(prompts)}")
        prompts = list(prompts)
    if not isinstance(prompts, Sequence):
        raise ValueError(f"prompts must be a list of token-id lists, got {_kind(prompts)}")
    if not prompts:
        raise ValueError("generate needs at least one prompt")
    if all(isinstance(p, numbers.Integral) for p in prompts):
        raise ValueError("prompts must be a list of token-id lists, got a flat list of ids; wrap one prompt as [ids]")
    out = [token_ids(p, f"prompt {b}", vocab_size) for b, p in enumerate(prompts)]
    empty = [b for b, p in enumerate(out) if not p]
    if empty:
        raise ValueError(f"every prompt needs at least one token; prompt {empty[0]} is empty")
    return out
