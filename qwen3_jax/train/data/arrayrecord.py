"""Pre-tokenized ArrayRecord: each record is one document's token ids as little-endian int32 bytes.

`write_tokenized` writes that format; `TokenizedSource` reads it through grain's
`ArrayRecordDataSource`. Records hold no EOS: the pipeline appends it like for text sources.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import grain
import numpy as np

from qwen3_jax.train.data.config import DataError

DTYPE = np.dtype("<i4")


def write_tokenized(path: str | os.PathLike, docs: Iterable[Sequence[int]]) -> int:
    """Writes token-id documents to an ArrayRecord file (a temp file renamed at the end).

    Returns:
      The number of documents written.
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    writer = ArrayRecordWriter(tmp, "group_size:1")
    n = 0
    try:
        for doc in docs:
            writer.write(np.asarray(doc, DTYPE).tobytes())
            n += 1
    except BaseException:
        writer.close()
        os.unlink(tmp)
        raise
    writer.close()
    os.replace(tmp, path)
    return n


class TokenizedSource:
    """Random-access token-id documents (int32 arrays) of ArrayRecord files."""

    def __init__(self, files: list[str]):
        self._files = list(files)
        try:
            self._records = grain.sources.ArrayRecordDataSource(self._files)
        except Exception as e:  # array_record raises plain RuntimeError/ValueError on a bad file
            raise DataError(f"{self._files[0]}: not a readable ArrayRecord file set ({e})".splitlines()[0]) from None

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> np.ndarray:
        raw = self._records[index]
        if len(raw) % DTYPE.itemsize:
            raise DataError(f"ArrayRecord source {self._files[0]}...: record {index} is {len(raw)} bytes, "
                            "not a whole number of int32 token ids")
        return np.frombuffer(raw, DTYPE).astype(np.int32)

    def __repr__(self) -> str:
        return f"TokenizedSource({len(self._files)} files, {len(self)} records)"
