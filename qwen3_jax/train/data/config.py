"""What the data pipeline reads and how it shapes batches: `SourceConfig` and `DataConfig`.

Both are frozen dataclasses. `DataConfig.from_dict` builds one from a YAML-style mapping and rejects
any key that is not a field (a typo must never fall back to a default silently).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

KINDS = ("jsonl", "parquet", "text", "array_record")
PACKERS = ("first_fit", "best_fit")
MIX_BY = ("tokens", "documents")
SHARD_BY = ("auto", "files", "records")


class DataError(ValueError):
    """Bad data input: a path with no files, a missing text field, an unknown kind or key."""


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """One source of documents.

    Attributes:
      path: a file, a directory (searched recursively with `pattern`), or a glob.
      kind: "jsonl" (one JSON object per line), "parquet" (a string column), "text" (each file one
        document), or "array_record" (pre-tokenized: each record the little-endian int32 token ids
        of one document, as written by `arrayrecord.write_tokenized`).
      weight: mixture weight: the source's share of the tokens (or of the documents, with
        `DataConfig.mix_by="documents"`) is weight / sum of weights.
      text_field: the JSON key / Parquet column holding the text ("jsonl", "parquet").
      pattern: glob of the files under a directory path; None = the kind's default
        (`*.jsonl`, `*.parquet`, `*.txt`, `*.array_record*`), searched recursively.
      min_tokens, max_tokens: keep only documents whose token count (EOS included) lies in
        [min_tokens, max_tokens]; max_tokens None = no upper bound. Stage 3's length mix is two
        sources with different bounds and weights.
      name: a label in errors and statistics; defaults to the path.
    """

    path: str
    kind: str = "jsonl"
    weight: float = 1.0
    text_field: str = "text"
    pattern: str | None = None
    min_tokens: int = 0
    max_tokens: int | None = None
    name: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise DataError(f"data source {self.path}: unknown kind {self.kind!r} (expected one of {', '.join(KINDS)})")
        if not self.weight > 0:
            raise DataError(f"data source {self.path}: weight must be > 0, got {self.weight}")
        if self.min_tokens < 0 or (self.max_tokens is not None and self.max_tokens < max(self.min_tokens, 1)):
            raise DataError(f"data source {self.path}: bad token bounds min_tokens={self.min_tokens} "
                            f"max_tokens={self.max_tokens}")

    @property
    def label(self) -> str:
        return self.name or self.path

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | "SourceConfig") -> "SourceConfig":
        if isinstance(d, SourceConfig):
            return d
        if not isinstance(d, Mapping):
            raise DataError(f"data source must be a mapping, got {type(d).__name__}: {d!r}")
        return cls(**_checked(cls, d, "data.sources[]"))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The pipeline: sources and their mixture, row shape, order, sharding.

    Attributes:
      sources: the sources (`SourceConfig`, or mappings with its fields).
      seq_len: tokens per packed row.
      batch_size: GLOBAL batch in rows, over all processes.
      seed: seeds the per-source shuffles (a new order every epoch) and the packer.
      num_shards: data shards; None = the process count. A global batch is the concatenation of
        `batch_size / num_shards` rows from each shard, shard 0 first, and a process owns a
        contiguous block of shards, so with a fixed `num_shards` the global batches do not depend
        on how many processes read them (1 process x 2 shards == 2 processes x 1 shard).
      shard_by: "files" (shard k reads every num_shards-th file, so a process indexes only its own
        files), "records" (every num_shards-th document of all files), or "auto": files for a source
        with at least num_shards files, else records.
      append_eos: end every document with the tokenizer's `<|endoftext|>` (also for ArrayRecord).
      mix_by: "tokens" (the sources' token shares follow the weights) or "documents" (grain's
        interleave by document counts).
      packer: "first_fit" or "best_fit" (grain's packers).
      packing_bins: rows the packer fills at once (more = less padding); 0 = max(64, rows per shard).
      read_threads: threads reading and tokenizing per source (grain `ReadOptions.num_threads`).
      prefetch: elements each source reads ahead (grain `ReadOptions.prefetch_buffer_size`).
      worker_processes: > 0 runs the pipeline in that many worker processes (grain `mp_prefetch`).
      num_epochs: None = endless (training); N = stop after N passes (e.g. an evaluation set): the
        stream ends when the first source or shard runs out, and the last batch is padded with
        empty rows (segment_ids 0) to the full shape.
    """

    sources: tuple[SourceConfig, ...]
    seq_len: int
    batch_size: int
    seed: int = 0
    num_shards: int | None = None
    shard_by: str = "auto"
    append_eos: bool = True
    mix_by: str = "tokens"
    packer: str = "first_fit"
    packing_bins: int = 0
    read_threads: int = 2
    prefetch: int = 64
    worker_processes: int = 0
    num_epochs: int | None = None

    def __post_init__(self):
        srcs = self.sources
        if isinstance(srcs, (Mapping, SourceConfig)):
            srcs = [srcs]
        if not srcs:
            raise DataError("data.sources: no data source given")
        object.__setattr__(self, "sources", tuple(SourceConfig.from_dict(s) for s in srcs))
        for key in ("seq_len", "batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise DataError(f"data.{key} must be a positive integer, got {value!r}")
        if self.num_shards is not None and self.num_shards < 1:
            raise DataError(f"data.num_shards must be >= 1, got {self.num_shards}")
        if self.shard_by not in SHARD_BY:
            raise DataError(f"data.shard_by: unknown value {self.shard_by!r} (expected one of {', '.join(SHARD_BY)})")
        if self.mix_by not in MIX_BY:
            raise DataError(f"data.mix_by: unknown value {self.mix_by!r} (expected one of {', '.join(MIX_BY)})")
        if self.packer not in PACKERS:
            raise DataError(f"data.packer: unknown packer {self.packer!r} (expected one of {', '.join(PACKERS)})")
        for key in ("packing_bins", "read_threads", "worker_processes"):
            if getattr(self, key) < 0:
                raise DataError(f"data.{key} must be >= 0, got {getattr(self, key)}")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise DataError(f"data.num_epochs must be >= 1 or None, got {self.num_epochs}")
        if self.prefetch < 1:
            raise DataError(f"data.prefetch must be >= 1, got {self.prefetch}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **overrides: Any) -> "DataConfig":
        """Builds a config from a mapping (e.g. a YAML `data:` section) plus keyword overrides.

        Raises:
          DataError: a key that is not a field, naming it.
        """
        merged = {**_checked(cls, d, "data"), **overrides}
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable mapping that `from_dict` turns back into this config."""
        out = dataclasses.asdict(self)
        out["sources"] = [dataclasses.asdict(s) for s in self.sources]
        return out


def _checked(cls, d: Mapping[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    for key in d:
        if key not in names:
            raise DataError(f"{where}: unknown key {key!r} (expected one of {', '.join(sorted(names))})")
    return dict(d)
