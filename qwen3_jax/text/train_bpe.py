"""Trains a small byte-level BPE with Qwen's pipeline, special tokens and chat format.

Small models (the demo model, tests, experiments) do not need Qwen's 151,643
BPE tokens: most of a tiny model's parameters would sit in an embedding table
whose rows are never trained. ``train_bpe`` learns a vocabulary of a chosen size
from the caller's text with the ``tokenizers`` library, and keeps everything
else of the Qwen3 tokenizer exactly: the NFC normaliser, the Qwen split regex
(numbers split into single digits), byte-level mapping, and the 26 added tokens
(``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, the tool and think tags…)
in Qwen's order, placed right after the learned tokens. The result is a
``qwen3_jax.Tokenizer`` carrying the Qwen3 chat template, so the project's chat
rendering, parsing and thinking control work unchanged; ``Tokenizer.save``
writes it as a checkpoint's ``tokenizer.json`` + ``tokenizer_config.json``.
"""

from __future__ import annotations

from collections.abc import Iterable

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from qwen3_jax.text import build
from qwen3_jax.text.tokenizer import Tokenizer
from qwen3_jax.text.tokenizer_files import qwen3_tokenizer_config

# 256 byte tokens are always in the vocabulary (byte-level BPE never needs an
# unknown token), then the 26 added tokens; at least a few merges on top.
MIN_VOCAB_SIZE = 256 + len(build.ADDED_TOKENS) + 1


def _pipeline() -> tokenizers.Tokenizer:
    byte_level = dict(add_prefix_space=False, use_regex=False)
    tok = tokenizers.Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(build.QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(**byte_level),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = tokenizers.processors.ByteLevel(trim_offsets=False)
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2,
              show_progress: bool = False) -> Tokenizer:
    """Learns a byte-level BPE of ``vocab_size`` ids with Qwen's added tokens.

    Args:
        texts: the training text (any iterable of strings; consumed once). Chat
            markup in it is harmless: the added tokens are matched before BPE.
        vocab_size: total number of ids, the 26 added tokens included. The
            learned part may come out smaller when the text has fewer distinct
            pairs than asked for; the added tokens always follow it directly.
        min_frequency: a pair must occur this often to be merged.
        show_progress: let ``tokenizers`` draw its progress bar.

    Returns:
        A ``Tokenizer`` whose ids ``0 .. n-1`` are the 256 bytes and the learned
        merges and ``n .. n+25`` are Qwen's added tokens in Qwen's order, with the
        Qwen3 chat template in its config.

    Raises:
        ValueError: ``vocab_size`` is not an int of at least ``MIN_VOCAB_SIZE``,
            or ``min_frequency`` is not a positive int.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be an int >= {MIN_VOCAB_SIZE} (256 bytes + "
                         f"{len(build.ADDED_TOKENS)} added tokens + 1), got {vocab_size!r}")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"min_frequency must be a positive int, got {min_frequency!r}")
    tok = _pipeline()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(build.ADDED_TOKENS),
        min_frequency=min_frequency,
        show_progress=show_progress,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator((t for t in texts if t), trainer=trainer)
    first_added = tok.get_vocab_size()
    added = [tokenizers.AddedToken(content, single_word=False, lstrip=False, rstrip=False,
                                   normalized=False, special=special)
             for content, special in build.ADDED_TOKENS]
    for token in added:  # one at a time: ids follow Qwen's order exactly
        if token.special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
    for i, (content, _) in enumerate(build.ADDED_TOKENS):
        got = tok.token_to_id(content)
        if got != first_added + i:  # the learned text contained the token's spelling as a merge
            raise ValueError(f"added token {content!r} got id {got}, expected {first_added + i}: "
                             "the training text must not be pre-tokenised chat markup")
    return Tokenizer(tok, qwen3_tokenizer_config(first_added))
