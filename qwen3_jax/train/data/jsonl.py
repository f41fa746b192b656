"""JSON Lines: one JSON object per line, the text under `text_field`; random access by line offset."""

from __future__ import annotations

import json
import os
import threading

import numpy as np

from qwen3_jax.train.data.config import DataError

_CHUNK = 1 << 24


def _line_spans(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Start and end byte offsets of the non-blank lines of a file."""
    starts, ends = [], []
    offset, line_start = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            newlines = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10) + offset
            if newlines.size:
                starts.append(np.concatenate([[line_start], newlines[:-1] + 1]))
                ends.append(newlines)
                line_start = int(newlines[-1]) + 1
            offset += len(chunk)
    if line_start < offset:  # a last line without a newline
        starts.append(np.array([line_start]))
        ends.append(np.array([offset]))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    s, e = np.concatenate(starts).astype(np.int64), np.concatenate(ends).astype(np.int64)
    keep = e - s > 1  # drop empty lines and lone "\r"
    return s[keep], e[keep]


class JsonlSource:
    """Random-access texts of JSONL files (grain `RandomAccessDataSource`).

    Indexes the line offsets of every file once; `__getitem__` reads one line with `os.pread`, so
    grain's reader threads can share it.
    """

    def __init__(self, files: list[str], text_field: str):
        self._files = list(files)
        self._field = text_field
        spans = [_line_spans(f) for f in self._files]
        self._starts = [s for s, _ in spans]
        self._ends = [e for _, e in spans]
        self._cum = np.cumsum([0] + [len(s) for s in self._starts])
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        for i, f in enumerate(self._files):  # fail early on a file whose first record lacks the field
            if len(self._starts[i]):
                self._text(i, 0)

    def __len__(self) -> int:
        return int(self._cum[-1])

    def __getitem__(self, index: int) -> str:
        file = int(np.searchsorted(self._cum, index, side="right")) - 1
        return self._text(file, index - int(self._cum[file]))

    def _text(self, file: int, line: int) -> str:
        fd = self._fds.get(file)
        if fd is None:
            with self._lock:
                if file not in self._fds:
                    self._fds[file] = os.open(self._files[file], os.O_RDONLY)
                fd = self._fds[file]
        start, end = int(self._starts[file][line]), int(self._ends[file][line])
        raw = os.pread(fd, end - start, start)
        where = f"{self._files[file]}: record {line + 1}"
        try:
            record = json.loads(raw)
        except ValueError as e:
            raise DataError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(record, dict) or self._field not in record:
            raise DataError(f"{where}: no text field {self._field!r}")
        text = record[self._field]
        if not isinstance(text, str):
            raise DataError(f"{where}: field {self._field!r} is {type(text).__name__}, not a string")
        return text

    def __getstate__(self):  # file descriptors and locks do not travel to worker processes
        state = {**self.__dict__, "_fds": {}}
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self, _close=os.close):  # bound early: module globals may be gone at exit
        for fd in getattr(self, "_fds", {}).values():
            try:
                _close(fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"JsonlSource({len(self._files)} files, {len(self)} records, field={self._field!r})"
