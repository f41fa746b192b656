"""Packing token documents into fixed-length rows, and the next-token targets of packed rows.

Documents longer than a row are first cut into row-sized chunks (`Chunk`, a grain flat map: no
token is dropped); grain's first-fit / best-fit packer then places whole chunks into rows and emits
`segment_ids` (1, 2, ... per document in the row, 0 = padding) and `positions` (restarting at 0 at
each document), which is what the model needs to keep attention inside a document.
"""

from __future__ import annotations

import grain
import numpy as np


class Chunk(grain.experimental.FlatMapTransform):
    """Splits one document's ids into pieces of at most `seq_len` tokens, as `{"tokens": ids}`."""

    def __init__(self, seq_len: int, max_fan_out: int = 1024):
        self.seq_len = seq_len
        self.max_fan_out = max_fan_out

    def flat_map(self, ids: np.ndarray) -> list[dict[str, np.ndarray]]:
        return [{"tokens": ids[i:i + self.seq_len]} for i in range(0, len(ids), self.seq_len)]


def packer(ds: grain.IterDataset, *, kind: str, seq_len: int, bins: int, seed: int) -> grain.IterDataset:
    """Packs `{"tokens": ids}` elements into rows `{"tokens", "segment_ids", "positions"}` [seq_len]."""
    cls = {"first_fit": grain.experimental.FirstFitPackIterDataset,
           "best_fit": grain.experimental.BestFitPackIterDataset}[kind]
    ds = cls(ds, length_struct={"tokens": seq_len}, num_packing_bins=bins, seed=seed, shuffle_bins=True)
    return ds.map(_rename)


def _rename(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"tokens": row["tokens"], "segment_ids": row["tokens_segment_ids"],
            "positions": row["tokens_positions"]}


def add_targets(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Adds `targets` (the next token in the same document, else 0) and `loss_mask` (1 where a
    target exists: not padding, not a document's last token in the row), all int32."""
    tokens, seg = batch["tokens"], batch["segment_ids"]
    targets = np.zeros_like(tokens)
    mask = np.zeros_like(seg)
    same = (seg[..., 1:] == seg[..., :-1]) & (seg[..., :-1] != 0)
    mask[..., :-1] = same
    targets[..., :-1] = np.where(same, tokens[..., 1:], 0)
    out = {k: np.asarray(v, np.int32) for k, v in batch.items()}
    out["targets"] = targets.astype(np.int32)
    out["loss_mask"] = mask.astype(np.int32)
    return out


def pad_rows(batch: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Pads a short last batch with empty rows (all 0) to `rows` rows."""
    return {k: np.pad(v, [(0, rows - len(v))] + [(0, 0)] * (v.ndim - 1)) for k, v in batch.items()}
