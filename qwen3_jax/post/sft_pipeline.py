"""SFT batches with grain: tokenized conversations packed into fixed rows, loss on assistant tokens.

    samples, stats = prepare(load_samples(paths, tok), seq_len=512, overlong="drop")
    ds = packed_batches(samples, seq_len=512, batch_size=8, seed=0)
    batch = next(iter(ds))   # int32 [B, T]: tokens, segment_ids, positions, loss_mask

Rows follow the pretraining pipeline's layout (``segment_ids`` 1, 2, ... per conversation, 0 for
padding; ``positions`` restarting at 0), plus ``loss_mask``: 1 at position t when the token t + 1
belongs to the same conversation and an assistant turn produced it, so the loss at t is the
prediction of an assistant token. Conversations are never split: one longer than a row is dropped
and counted (``overlong="drop"``, the default) or stops the run before any step
(``overlong="error"``). Tokenization happens once, before training, so every bad line is found
before anything is written; the iterator's state (grain) is checkpointed with the run for an exact
resume.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import grain
import numpy as np

from qwen3_jax.post.sft_data import ChatSample, SFTDataError

BATCH_KEYS = ("tokens", "segment_ids", "positions", "loss_mask")


@dataclasses.dataclass(frozen=True)
class PrepareStats:
    """What `prepare` kept.

    Attributes:
        samples: conversations read.
        kept: conversations that fit a row.
        dropped_overlong: conversations longer than ``seq_len`` (dropped).
        assistant_tokens: loss tokens of the kept conversations.
        tokens: all tokens of the kept conversations.
    """

    samples: int
    kept: int
    dropped_overlong: int
    assistant_tokens: int
    tokens: int


def prepare(samples: Sequence[ChatSample], seq_len: int, overlong: str = "drop") -> tuple[list[ChatSample], PrepareStats]:
    """Keeps the conversations that fit one row.

    Args:
        samples: tokenized conversations.
        seq_len: tokens per row.
        overlong: "drop" (count and skip) or "error" for a conversation longer than ``seq_len``.

    Returns:
        (the kept samples, statistics).

    Raises:
        SFTDataError: ``overlong="error"`` and a conversation is too long (its index and length
            named), or no conversation fits.
    """
    if overlong not in ("drop", "error"):
        raise ValueError(f"overlong must be 'drop' or 'error', got {overlong!r}")
    kept = []
    for i, s in enumerate(samples):
        if len(s) <= seq_len:
            kept.append(s)
        elif overlong == "error":
            raise SFTDataError(f"conversation {i} has {len(s)} tokens, more than seq_len {seq_len} "
                               "(set overlong: drop to skip such conversations)")
    if not kept:
        raise SFTDataError(f"no conversation fits seq_len {seq_len} ({len(samples)} read, all longer)")
    stats = PrepareStats(samples=len(samples), kept=len(kept), dropped_overlong=len(samples) - len(kept),
                         assistant_tokens=int(sum(s.loss_mask.sum() for s in kept)),
                         tokens=int(sum(len(s) for s in kept)))
    return kept, stats


def shift_mask(tokens_mask: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """Per-position loss weights from per-token assistant flags.

    Args:
        tokens_mask: [..., T] 1 where the token is an assistant token.
        segment_ids: [..., T] packing ids (0 = padding).

    Returns:
        int32 [..., T]: 1 at t when token t + 1 is an assistant token of the same conversation.
    """
    out = np.zeros(segment_ids.shape, np.int32)
    same = (segment_ids[..., 1:] == segment_ids[..., :-1]) & (segment_ids[..., :-1] != 0)
    out[..., :-1] = same & (tokens_mask[..., 1:] != 0)
    return out


def _to_row(packed: dict) -> dict:
    seg = np.asarray(packed["tokens_segment_ids"], np.int32)
    return {"tokens": np.asarray(packed["tokens"], np.int32), "segment_ids": seg,
            "positions": np.asarray(packed["tokens_positions"], np.int32),
            "loss_mask": shift_mask(np.asarray(packed["mask"]), seg)}


def packed_batches(samples: Sequence[ChatSample], seq_len: int, batch_size: int, seed: int = 0,
                   bins: int = 0, shard_index: int = 0, shard_count: int = 1) -> grain.IterDataset:
    """An endless, seeded, resumable stream of packed SFT batches (reshuffled every epoch).

    Args:
        samples: conversations that fit a row (see `prepare`).
        seq_len: tokens per row.
        batch_size: rows per batch (this process's share of the global batch).
        seed: seeds the order and the packer.
        bins: rows the first-fit packer fills at once; 0 = max(8, batch_size).
        shard_index, shard_count: this process's slice of the conversations.

    Returns:
        A grain IterDataset of dicts of int32 [batch_size, seq_len] arrays (``BATCH_KEYS``).
    """
    too_long = [i for i, s in enumerate(samples) if len(s) > seq_len]
    if too_long:
        raise SFTDataError(f"conversation {too_long[0]} has {len(samples[too_long[0]])} tokens > seq_len {seq_len}; "
                           "run prepare() first")
    elements = [{"tokens": s.ids.astype(np.int32), "mask": s.loss_mask.astype(np.int32)} for s in samples]
    ds = grain.MapDataset.source(elements)[shard_index::shard_count].shuffle(seed=seed).repeat(None)
    packer = grain.experimental.FirstFitPackIterDataset(
        ds.to_iter_dataset(), length_struct={"tokens": seq_len, "mask": seq_len},
        num_packing_bins=bins or max(8, batch_size), seed=seed, shuffle_bins=True)
    return packer.map(_to_row).batch(batch_size, drop_remainder=True)


class BatchIterator:
    """An iterator over a grain dataset whose position is JSON bytes (what the trainer checkpoints).

    Attributes:
        dataset: the grain IterDataset.
    """

    def __init__(self, dataset: grain.IterDataset):
        self.dataset = dataset
        self._it = iter(dataset)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return next(self._it)

    def get_state(self) -> bytes:
        return json.dumps(self._it.get_state()).encode()

    def start_prefetch(self) -> None:
        """Called by grain's checkpoint handler after a restore; nothing runs ahead here."""
        getattr(self._it, "start_prefetch", lambda: None)()

    def set_state(self, state: bytes | str | dict) -> None:
        if isinstance(state, (bytes, str)):
            state = json.loads(state)
        self._it.set_state(state)
