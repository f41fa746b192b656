"""Reading safetensors files and Hugging Face checkpoint directories without copying.

A small reader of the safetensors layout (8-byte little-endian header size, a JSON header of
name -> {dtype, shape, data_offsets}, then the raw bytes) over `np.memmap`, so a tensor is read
only when it is used and bfloat16 comes back as an `ml_dtypes` NumPy array. A header that is not
JSON, offsets past the end of a truncated file, or sizes that disagree with shape x dtype raise
`CheckpointError` naming the file and the tensor.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match the model config."""


class SafetensorsFile:
    """Lazy, memory-mapped view of one .safetensors file.

    Attributes:
      path: the file.
      entries: name -> (dtype, shape, start, end) with offsets relative to the data section.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            size = os.path.getsize(self.path)
            with open(self.path, "rb") as f:
                raw = f.read(8)
                if len(raw) < 8:
                    raise CheckpointError(f"{self.path}: truncated safetensors file (no header)")
                (n,) = struct.unpack("<Q", raw)
                if n > size - 8:
                    raise CheckpointError(f"{self.path}: corrupt safetensors header (size {n} > file)")
                header = json.loads(f.read(n))
        except FileNotFoundError:
            raise CheckpointError(f"missing safetensors file {self.path}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{self.path}: corrupt safetensors header ({e})") from None
        self._data_start = 8 + n
        self.metadata = header.pop("__metadata__", None) or {}
        self.entries = {}
        data_size = size - self._data_start
        for name, e in header.items():
            try:
                dtype = DTYPES[e["dtype"]]
                shape = tuple(int(s) for s in e["shape"])
                start, end = (int(o) for o in e["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{self.path}: bad header entry for tensor {name!r}: {e!r}") from None
            if end > data_size:
                raise CheckpointError(
                    f"{self.path}: tensor {name!r} ends at byte {end} but the file holds {data_size} data bytes"
                    " (truncated file?)")
            if end - start != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                raise CheckpointError(f"{self.path}: tensor {name!r} byte size does not match shape {shape}")
            self.entries[name] = (dtype, shape, start, end)

    def keys(self):
        return self.entries.keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def dtype(self, name: str) -> np.dtype:
        return self.entries[name][0]

    def get(self, name: str) -> np.ndarray:
        """The tensor as a read-only memory-mapped array (no copy)."""
        dtype, shape, start, end = self.entries[name]
        if end == start:
            return np.zeros(shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=self._data_start + start, shape=shape)


def checkpoint_files(path: str | os.PathLike) -> dict[str, str]:
    """Maps every tensor name of a HF checkpoint directory to the file that holds it.

    Reads `model.safetensors.index.json` when present (sharded checkpoints), else
    `model.safetensors`.
    """
    path = os.fspath(path)
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        return {k: os.path.join(path, v) for k, v in weight_map.items()}
    if os.path.exists(single):
        return {k: single for k in SafetensorsFile(single).keys()}
    raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")


class CheckpointReader:
    """All tensors of a HF checkpoint directory, opened lazily file by file."""

    def __init__(self, path: str | os.PathLike):
        self.where = checkpoint_files(path)
        self._files: dict[str, SafetensorsFile] = {}

    def file(self, name: str) -> SafetensorsFile:
        fp = self.where[name]
        if fp not in self._files:
            self._files[fp] = SafetensorsFile(fp)
        f = self._files[fp]
        if name not in f.entries:
            raise CheckpointError(f"{fp}: the index lists tensor {name!r} but the file does not hold it")
        return f

    def names(self):
        return self.where.keys()

    def shape(self, name):
        return self.file(name).shape(name)

    def get(self, name):
        return self.file(name).get(name)
