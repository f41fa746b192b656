"""The tokenizer's files: where the built Qwen3 tokenizer is cached, atomic writes, reading
``tokenizer.json``, and the ``tokenizer_config.json`` of the released Qwen3 checkpoints.

Used by `text.tokenizer.Tokenizer` (loading, ``qwen3()`` and ``save``) and by
`text.train_bpe` (a small vocabulary with the same added tokens and chat template).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import tokenizers

from qwen3_jax.text import build, template

CACHE_ENV = "QWEN3_JAX_CACHE_DIR"


class TokenizerFileError(ValueError):
    """A tokenizer file exists but cannot be read (bad JSON, wrong structure)."""


def cache_dir() -> Path:
    """Returns the directory where the built Qwen3 ``tokenizer.json`` is cached.

    Returns:
        ``$QWEN3_JAX_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/qwen3_jax``, else
        ``~/.cache/qwen3_jax``.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qwen3_jax"


def write_atomic(path: Path, text: str) -> None:
    # Temp file in the same directory + rename: a concurrent reader (another test
    # worker, another process) sees either no file or the complete file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def qwen3_tokenizer_config(first_added_id: int = build.NUM_BPE_TOKENS) -> dict[str, Any]:
    """Returns the ``tokenizer_config.json`` of the released Qwen3 checkpoints (their ``tokenizer_config.json`` on the Hugging Face hub).

    Args:
        first_added_id: id of ``<|endoftext|>``, the first of the 26 added tokens
            (151,643 for Qwen's vocabulary; smaller for a tokenizer trained by
            ``qwen3_jax.text.train_bpe``).

    Returns:
        A JSON-serialisable dict, chat template included.
    """
    added = {
        str(first_added_id + i): {
            "content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special,
        }
        for i, (content, special) in enumerate(build.ADDED_TOKENS)
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        # The 13 entries from <|im_start|> to <|video_pad|>, as in the release.
        "additional_special_tokens": [c for c, _ in build.ADDED_TOKENS[1:14]],
        "bos_token": None,
        "chat_template": template.QWEN3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def load_backend(path: Path) -> tokenizers.Tokenizer:
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises plain Exception for bad JSON/structure
        raise TokenizerFileError(f"{path}: not a valid tokenizer.json ({e})") from e
