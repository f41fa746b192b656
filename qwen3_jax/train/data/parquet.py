"""Parquet: the text column `text_field`; random access by row group, the last groups cached."""

from __future__ import annotations

import collections
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qwen3_jax.train.data.config import DataError

_CACHED_GROUPS = 4


class ParquetSource:
    """Random-access texts of Parquet files (grain `RandomAccessDataSource`)."""

    def __init__(self, files: list[str], text_field: str):
        self._files = list(files)
        self._field = text_field
        groups = []  # (file index, row group, rows)
        for i, f in enumerate(self._files):
            try:
                meta = pq.ParquetFile(f).metadata
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{f}: not a readable Parquet file ({e})") from None
            names = meta.schema.to_arrow_schema().names
            if text_field not in names:
                raise DataError(f"{f}: no text field {text_field!r} (columns: {', '.join(names)})")
            groups += [(i, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        self._groups = [(i, g) for i, g, n in groups if n]
        self._cum = np.cumsum([0] + [n for _, _, n in groups if n])
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict = collections.OrderedDict()

    def __len__(self) -> int:
        return int(self._cum[-1])

    def __getitem__(self, index: int) -> str:
        k = int(np.searchsorted(self._cum, index, side="right")) - 1
        texts = self._group(k)
        text = texts[index - int(self._cum[k])]
        if not isinstance(text, str):
            file, group = self._groups[k]
            raise DataError(f"{self._files[file]}: row {index - int(self._cum[k])} of row group {group}: "
                            f"field {self._field!r} is {type(text).__name__}, not a string")
        return text

    def _group(self, k: int) -> list:
        with self._lock:
            if k in self._cache:
                self._cache.move_to_end(k)
                return self._cache[k]
        file, group = self._groups[k]
        texts = pq.ParquetFile(self._files[file]).read_row_group(group, columns=[self._field]).column(0).to_pylist()
        with self._lock:
            self._cache[k] = texts
            while len(self._cache) > _CACHED_GROUPS:
                self._cache.popitem(last=False)
        return texts

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_lock"]
        state["_cache"] = collections.OrderedDict()
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ParquetSource({len(self._files)} files, {len(self)} rows, field={self._field!r})"
