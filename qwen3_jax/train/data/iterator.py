"""`DataIterator`: the trainer's view of the pipeline: batches, and a state to checkpoint."""

from __future__ import annotations

import json
from typing import Any

import grain
import numpy as np

from qwen3_jax.train.data.config import DataError

STATE_FORMAT = 1


class DataIterator:
    """Endless batches `{"tokens", "segment_ids", "positions", "targets", "loss_mask"}`, int32
    [local_batch, seq_len], with an exact, JSON-encoded state.

    `get_state()` returns UTF-8 JSON bytes and `set_state()` takes them back (or the decoded dict),
    so it works with grain's orbax handler: `grain.checkpoint.CheckpointSave(it)` /
    `grain.checkpoint.CheckpointRestore(it)`.
    """

    def __init__(self, ds: grain.IterDataset, layout: dict[str, Any]):
        self._ds = ds
        self._iter = iter(ds)
        self.layout = dict(layout)

    def __iter__(self) -> "DataIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iter)

    def get_state(self) -> bytes:
        """The position after the last batch returned, as UTF-8 JSON bytes."""
        state = {"format": STATE_FORMAT, "layout": self.layout, "pipeline": self._iter.get_state()}
        return json.dumps(state, default=_jsonable).encode()

    def set_state(self, state: bytes | str | dict) -> None:
        """Continues from a `get_state()` result: the next batch is the one that followed it.

        Raises:
          DataError: the state is not one of ours, or was saved with another shard layout
            (different process count, num_shards, batch or sequence length).
        """
        if isinstance(state, (bytes, bytearray)):
            state = state.decode()
        if isinstance(state, str):
            try:
                state = json.loads(state)
            except ValueError as e:
                raise DataError(f"data iterator state is not valid JSON ({e})") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise DataError("data iterator state: not a qwen3_jax data state (format "
                            f"{state.get('format') if isinstance(state, dict) else None!r})")
        if state.get("layout") != self.layout:
            raise DataError(f"data iterator state was saved with layout {state.get('layout')}, "
                            f"this pipeline has {self.layout}")
        self._iter.set_state(state["pipeline"])

    def start_prefetch(self) -> None:
        """Starts background reading now (grain's checkpoint handler calls it after a restore)."""
        start = getattr(self._iter, "start_prefetch", None)
        if start is not None:
            start()

    def close(self) -> None:
        """Stops background readers and worker processes (idempotent)."""
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()

    @property
    def local_batch_size(self) -> int:
        """Rows per batch in this process."""
        return self.layout["batch_size"] // self.layout["num_shards"] * len(self.layout["shards"])

    def __repr__(self) -> str:
        return f"DataIterator({self.layout})"


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"data iterator state holds a {type(x).__name__}, which JSON cannot encode")
