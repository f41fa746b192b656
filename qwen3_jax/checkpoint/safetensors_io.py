"""Reading safetensors files and Hugging Face checkpoint directories without copying.

A small reader of the safetensors layout (8-byte little-endian header size, a JSON header of
name -> {dtype, shape, data_offsets}, then the raw bytes) over `np.memmap`, so a tensor is read
only when it is used and bfloat16 comes back as an `ml_dtypes` NumPy array. Headers are checked
as strictly as the safetensors library checks them (`parse_header`: JSON object, known dtypes,
sizes equal to shape x dtype, tensors tiling the data section without gap or overlap); every
problem raises `CheckpointError` naming the file and the tensor.
"""

from __future__ import annotations

import json
import math
import os
import struct

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}


# The safetensors library refuses headers above 100 MB.
MAX_HEADER_BYTES = 100_000_000


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match the model config."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def parse_header(header, data_size: int, path: str) -> dict[str, tuple[np.dtype, tuple[int, ...], int, int]]:
    """Validates a decoded safetensors header as strictly as the safetensors library does.

    Every entry needs a known dtype, a shape of non-negative ints and [start, end) offsets whose
    size is shape x dtype; sorted by offset, the tensors must tile the data section exactly (from
    byte 0 to its end, no gap, no overlap). `__metadata__` must map strings to strings.

    Returns:
      name -> (dtype, shape, start, end), offsets relative to the data section.
    """
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (a JSON {type(header).__name__}, not an object)")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                               for k, v in meta.items())):
        raise CheckpointError(f"{path}: __metadata__ must map strings to strings, got {meta!r:.80}")
    entries = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(e, dict) and set(e) >= {"dtype", "shape", "data_offsets"}
                and isinstance(e["dtype"], str) and isinstance(e["shape"], list)
                and all(_is_int(d) for d in e["shape"]) and isinstance(e["data_offsets"], list)
                and len(e["data_offsets"]) == 2 and all(_is_int(o) for o in e["data_offsets"])):
            raise CheckpointError(f"{path}: bad header entry for tensor {name!r}: {e!r:.120} (expected "
                                  "{dtype: str, shape: [int, ...], data_offsets: [start, end]})")
        if e["dtype"] not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unknown dtype {e['dtype']!r} "
                                  f"(known: {', '.join(DTYPES)})")
        dtype, shape = DTYPES[e["dtype"]], tuple(e["shape"])
        start, end = e["data_offsets"]
        if end > data_size:
            raise CheckpointError(
                f"{path}: tensor {name!r} ends at byte {end} but the file holds {data_size} data bytes"
                " (truncated file?)")
        if end < start or end - start != math.prod(shape) * dtype.itemsize:
            raise CheckpointError(f"{path}: tensor {name!r} byte range [{start}, {end}) does not match shape "
                                  f"{list(shape)} x {e['dtype']}")
        entries[name] = (dtype, shape, start, end)
    at = 0
    for name, (_, _, start, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if start != at:
            what = "overlaps the previous tensor" if start < at else f"leaves a gap of {start - at} bytes before it"
            raise CheckpointError(f"{path}: tensor {name!r} at bytes [{start}, {end}) {what} (corrupt header)")
        at = end
    if at != data_size:
        raise CheckpointError(f"{path}: the tensors cover {at} of the {data_size} data bytes (corrupt header)")
    return entries


def all_finite(x: np.ndarray, chunk: int = 1 << 24) -> bool:
    """Whether every element of a float array is finite, read in chunks (no full-size temporary)."""
    flat = x.reshape(-1)
    if x.dtype.name == "bfloat16":  # ml_dtypes' isfinite is slow: test the exponent bits directly
        flat, mask = flat.view(np.uint16), np.uint16(0x7F80)
        return all(not np.any((flat[i:i + chunk] & mask) == mask) for i in range(0, flat.size, chunk))
    if x.dtype.kind != "f":
        return True
    return all(np.isfinite(flat[i:i + chunk]).all() for i in range(0, flat.size, chunk))


def is_float(dt: np.dtype) -> bool:
    """Whether `dt` is a floating-point dtype (bfloat16 included; ml_dtypes gives it kind "V")."""
    return dt.kind == "f" or dt.name == "bfloat16"


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
                if n > MAX_HEADER_BYTES:
                    raise CheckpointError(f"{self.path}: corrupt safetensors header (size {n} > {MAX_HEADER_BYTES})")
                header = json.loads(f.read(n))
        except FileNotFoundError:
            raise CheckpointError(f"missing safetensors file {self.path}") from None
        except IsADirectoryError:
            raise CheckpointError(f"{self.path} is a directory, not a safetensors file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{self.path}: corrupt safetensors header ({e})") from None
        self._data_start = 8 + n
        self.entries = parse_header(header, size - self._data_start, self.path)
        self.metadata = header.get("__metadata__") or {}

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
                data = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not (isinstance(weight_map, dict) and all(isinstance(k, str) and isinstance(v, str) and v
                                                     and os.path.basename(v) == v for k, v in weight_map.items())):
            raise CheckpointError(f"{index}: not a valid safetensors index (expected an object whose \"weight_map\" "
                                  "maps tensor names to file names in the same directory)")
        return {k: os.path.join(path, v) for k, v in weight_map.items()}
    if os.path.exists(single):
        return {k: single for k in SafetensorsFile(single).keys()}
    raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")


class CheckpointReader:
    """All tensors of a HF checkpoint directory, opened lazily file by file."""

    def __init__(self, path: str | os.PathLike):
        self.where = checkpoint_files(path)
        self._files: dict[str, SafetensorsFile] = {}

    def open(self, fp: str) -> SafetensorsFile:
        """The file `fp` (opened once)."""
        if fp not in self._files:
            self._files[fp] = SafetensorsFile(fp)
        return self._files[fp]

    def file(self, name: str) -> SafetensorsFile:
        fp = self.where[name]
        f = self.open(fp)
        if name not in f.entries:
            raise CheckpointError(f"{fp}: the index lists tensor {name!r} but the file does not hold it")
        return f

    def names(self):
        return self.where.keys()

    def shape(self, name):
        return self.file(name).shape(name)

    def get(self, name):
        return self.file(name).get(name)
