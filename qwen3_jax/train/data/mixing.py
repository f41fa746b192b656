"""Weighted mixtures of document streams, by token share (default) or by document share.

"tokens": before each document, the source with the fewest tokens drawn per unit of weight so far
gives the next one (ties go to the earlier source). The token shares then track the weights to
within one document, whatever the document lengths, which is what a length mix needs: stage 3's
"75% of tokens from 16K-32K documents" is weights 3:1 over a long and a short source. The choice
depends only on the counts, so it is deterministic and its state is just the counts.
"documents": grain's `IterDataset.mix`, a fixed interleave in proportion to the weights counted in
documents.
"""

from __future__ import annotations

from typing import Any, Sequence

import grain
import numpy as np

MIX_BY = ("tokens", "documents")


def mix(streams: Sequence[grain.IterDataset], weights: Sequence[float], by: str) -> grain.IterDataset:
    """One stream of id arrays drawn from `streams` in proportion to `weights`."""
    if len(streams) == 1:
        return streams[0]
    if by == "documents":
        return grain.IterDataset.mix(list(streams), list(weights))
    return TokenMixIterDataset(streams, weights)


class TokenMixIterDataset(grain.IterDataset):
    """Mixes endless streams of id arrays so that each one's token share follows its weight."""

    def __init__(self, parents: Sequence[grain.IterDataset], weights: Sequence[float]):
        super().__init__(list(parents))
        self._weights = [float(w) for w in weights]

    def __iter__(self) -> grain.DatasetIterator:
        return _TokenMixIterator([p.__iter__() for p in self._parents], self._weights)

    def __str__(self) -> str:
        return f"TokenMixIterDataset({len(self._parents)} parents, weights={self._weights})"


class _TokenMixIterator(grain.DatasetIterator):
    def __init__(self, parents: list[grain.DatasetIterator], weights: list[float]):
        super().__init__(parents)
        self._weights = weights
        self._tokens = [0] * len(parents)

    def __next__(self) -> np.ndarray:
        i = min(range(len(self._weights)), key=lambda k: (self._tokens[k] / self._weights[k], k))
        ids = next(self._parents[i])
        self._tokens[i] += len(ids)
        return ids

    def get_state(self) -> dict[str, Any]:
        return {"parents": [p.get_state() for p in self._parents], "tokens": list(self._tokens)}

    def set_state(self, state: dict[str, Any]) -> None:
        for parent, parent_state in zip(self._parents, state["parents"]):
            parent.set_state(parent_state)
        self._tokens = [int(t) for t in state["tokens"]]
