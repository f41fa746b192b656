"""Writing safetensors files ourselves, bit for bit, one tensor at a time.

The layout is the one `safetensors_io` reads: an 8-byte little-endian header size, a JSON header
of name -> {dtype, shape, data_offsets} (padded with spaces to a multiple of 8 bytes), then the
raw C-order bytes. Writing it directly (rather than through `safetensors.numpy`) keeps bfloat16
exact through `ml_dtypes` and lets a shard be streamed: the header is computed from the planned
shapes up front, so each tensor can be written and dropped before the next one is built.

`write_random_hf_checkpoint` uses the same writer to make large test checkpoints with NumPy only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Iterable, Sequence

import ml_dtypes
import numpy as np

_NAMES = {np.dtype(np.float32): "F32", np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.float16): "F16",
          np.dtype(np.float64): "F64"}


def dtype_name(dtype) -> str:
    """The safetensors dtype string ("F32", "BF16", ...) of a NumPy / ml_dtypes dtype."""
    dt = np.dtype(dtype)
    if dt not in _NAMES:
        raise ValueError(f"cannot write dtype {dt} to safetensors (supported: {sorted(map(str, _NAMES))})")
    return _NAMES[dt]


def parse_size(size: str | int) -> int:
    """"5GB" -> 5_000_000_000, "500MiB" -> 524_288_000, 1000 -> 1000 (decimal units as on the hub)."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?i?B?)\s*", size, re.IGNORECASE)
    if not m:
        raise ValueError(f"cannot parse size {size!r} (examples: 5GB, 500MB, 2GiB, 1000000)")
    unit = m.group(2).upper().rstrip("B")
    base = 1024 if unit.endswith("I") else 1000
    power = " KMGT".index(unit[:1] or " ")
    return int(float(m.group(1)) * base ** power)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One planned tensor: name, shape and dtype (its bytes come later)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def plan_shards(entries: Sequence[Entry], max_bytes: int) -> list[list[Entry]]:
    """Splits tensors, in order, into shards of at most `max_bytes` (a bigger tensor gets its own)."""
    shards: list[list[Entry]] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + e.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e.nbytes
    return shards if shards[0] else []


def shard_names(n: int) -> list[str]:
    """File names as transformers writes them: one "model.safetensors", or model-0000i-of-0000n."""
    if n == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


class ShardWriter:
    """Streams the tensors of one planned shard into a safetensors file.

    The header is written on construction from the plan; `write` must then be called once per
    entry, in plan order, and `close` checks that every planned tensor arrived.
    """

    def __init__(self, path: str | os.PathLike, entries: Sequence[Entry], metadata: dict | None = None):
        self.path = os.fspath(path)
        self._entries = list(entries)
        header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        for e in self._entries:
            header[e.name] = {"dtype": dtype_name(e.dtype), "shape": list(e.shape),
                              "data_offsets": [offset, offset + e.nbytes]}
            offset += e.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned, as the format asks
        self._f = open(self.path, "wb")
        self._f.write(len(raw).to_bytes(8, "little"))
        self._f.write(raw)
        self._next = 0

    def write(self, name: str, array: np.ndarray) -> None:
        """Appends the bytes of the next planned tensor (checked against the plan)."""
        e = self._entries[self._next]
        if name != e.name or tuple(array.shape) != e.shape or np.dtype(array.dtype) != np.dtype(e.dtype):
            raise ValueError(f"{self.path}: expected {e.name} {e.shape} {np.dtype(e.dtype)}, "
                             f"got {name} {tuple(array.shape)} {array.dtype}")
        # A uint8 view of the C-ordered array writes the exact bits, whatever the float type.
        self._f.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        self._next += 1

    def close(self) -> None:
        self._f.close()
        if self._next != len(self._entries):
            raise ValueError(f"{self.path}: wrote {self._next} of {len(self._entries)} planned tensors")


def write_index(path: str | os.PathLike, shards: Sequence[Sequence[Entry]], names: Sequence[str]) -> None:
    """Writes `model.safetensors.index.json` (total size and tensor -> file map)."""
    weight_map = {e.name: fname for shard, fname in zip(shards, names) for e in shard}
    total = sum(e.nbytes for shard in shards for e in shard)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def write_tensors(directory: str | os.PathLike, tensors: Iterable[tuple[str, np.ndarray]],
                  entries: Sequence[Entry], max_bytes: int) -> list[str]:
    """Writes `tensors` (yielded in `entries` order) as a HF checkpoint; returns the file names.

    Args:
      directory: existing output directory.
      tensors: (name, array) pairs, produced lazily so only one needs to be in memory.
      entries: the plan (name, shape, dtype of every tensor, same order).
      max_bytes: largest shard size.
    """
    shards = plan_shards(entries, max_bytes)
    names = shard_names(len(shards))
    it = iter(tensors)
    for shard, fname in zip(shards, names):
        w = ShardWriter(os.path.join(directory, fname), shard)
        for _ in shard:
            w.write(*next(it))
        w.close()
    if len(shards) > 1:
        write_index(os.path.join(directory, "model.safetensors.index.json"), shards, names)
    return names


def write_random_hf_checkpoint(directory: str | os.PathLike, cfg, dtype="float32", seed: int = 0,
                               max_shard_size: str | int = "5GB") -> int:
    """Writes a random HF checkpoint of `cfg` (config.json + safetensors) with NumPy only.

    Used by benchmarks and tests that need multi-GB checkpoints quickly; the values are uniform
    noise (not a usable model). Returns the number of tensor bytes written.
    """
    from qwen3_jax.checkpoint.hf_mapping import hf_tensors

    os.makedirs(directory, exist_ok=True)
    dt = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    rng = np.random.default_rng(seed)
    entries = [Entry(t.hf_name, t.hf_shape, dt) for t in hf_tensors(cfg)]

    def gen():
        for e in entries:
            yield e.name, (rng.random(e.shape, dtype=np.float32) - 0.5).astype(dt, copy=False)

    write_tensors(directory, gen(), entries, parse_size(max_shard_size))
    hf = cfg.to_hf_dict()
    hf["torch_dtype"] = str(np.dtype(dtype).name) if dtype != "bfloat16" else "bfloat16"
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf, f, indent=2)
    return sum(e.nbytes for e in entries)
