"""`build_data`: sources -> shuffled, sharded, tokenized, mixed, packed, batched grain pipeline."""

from __future__ import annotations

import functools
from typing import Any

import grain
import numpy as np

from qwen3_jax.train.data import arrayrecord, jsonl, mixing, packing, parquet, textdir
from qwen3_jax.train.data.config import DataConfig, DataError, SourceConfig
from qwen3_jax.train.data.files import resolve_files
from qwen3_jax.train.data.iterator import DataIterator
from qwen3_jax.train.data.tokenize import LengthFilter, Tokenize


def open_source(src: SourceConfig, files: list[str] | None = None):
    """The random-access document source of one `SourceConfig` (texts, or id arrays).

    Args:
      src: the source.
      files: read these files instead of all of the source's (`resolve_files`).
    """
    files = resolve_files(src) if files is None else files
    if src.kind == "jsonl":
        return jsonl.JsonlSource(files, src.text_field)
    if src.kind == "parquet":
        return parquet.ParquetSource(files, src.text_field)
    if src.kind == "text":
        return textdir.TextFilesSource(files)
    return arrayrecord.TokenizedSource(files)


def shard_sources(cfg: DataConfig, shards: list[int], num_shards: int) -> list[list[grain.MapDataset]]:
    """Per owned shard, per source: the shard's documents (unshuffled).

    A source with at least `num_shards` files is split by files (shard k reads files
    k, k + num_shards, ...: a process opens and indexes only its own files); one with fewer files
    by records (`[k::num_shards]`). `cfg.shard_by` forces either.
    """
    out = [[] for _ in shards]
    for src in cfg.sources:
        files = resolve_files(src)
        by = cfg.shard_by
        if by == "auto":
            by = "files" if len(files) >= num_shards > 1 else "records"
        if by == "files" and len(files) < num_shards:
            raise DataError(f"data source {src.label}: {len(files)} files cannot fill {num_shards} data shards "
                            "(shard_by: files)")
        whole = open_source(src, files) if by == "records" else None
        for j, shard in enumerate(shards):
            if whole is None:
                ds = grain.MapDataset.source(open_source(src, files[shard::num_shards]))
            else:
                ds = grain.MapDataset.source(whole)[shard::num_shards]
            if len(ds) == 0:
                total = f" ({len(whole)} documents in all)" if whole is not None else ""
                raise DataError(f"data source {src.label}: data shard {shard} of {num_shards} gets no documents{total}")
            out[j].append(ds)
    return out


def shard_layout(cfg: DataConfig, process_index: int, process_count: int) -> tuple[int, list[int], int]:
    """(num_shards, the shards this process owns, rows per shard) after checking they divide."""
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index {process_index} is not in [0, process_count={process_count})")
    num_shards = cfg.num_shards or process_count
    if num_shards % process_count:
        raise DataError(f"data.num_shards={num_shards} is not a multiple of the process count {process_count}")
    if cfg.batch_size % num_shards:
        raise DataError(f"data.batch_size={cfg.batch_size} does not divide into {num_shards} data shards")
    per_process = num_shards // process_count
    shards = list(range(process_index * per_process, (process_index + 1) * per_process))
    return num_shards, shards, cfg.batch_size // num_shards


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1)[0] >> 1)


def _shard_stream(cfg: DataConfig, docs: list[grain.MapDataset], tokenizer: Any, shard: int,
                  rows: int) -> grain.IterDataset:
    """Batches of `rows` packed rows from one data shard (`docs`: its documents of each source)."""
    read = grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.prefetch)
    streams = []
    for i, (src, ds) in enumerate(zip(cfg.sources, docs)):
        n = len(ds)
        ds = ds.shuffle(seed=_seed(cfg.seed, i, shard)).repeat(cfg.num_epochs)   # a new order every epoch
        ds = ds.map(Tokenize(tokenizer, cfg.append_eos))
        ds = ds.filter(LengthFilter(src.label, src.min_tokens, src.max_tokens, give_up=2 * n + 64))
        streams.append(ds.to_iter_dataset(read))
    ds = mixing.mix(streams, [s.weight for s in cfg.sources], cfg.mix_by)
    ds = grain.experimental.FlatMapIterDataset(ds, packing.Chunk(cfg.seq_len))
    ds = packing.packer(ds, kind=cfg.packer, seq_len=cfg.seq_len,
                        bins=cfg.packing_bins or max(64, rows), seed=_seed(cfg.seed, 1 << 20, shard))
    if cfg.num_epochs is None:
        return ds.batch(rows, drop_remainder=True)
    return ds.batch(rows, drop_remainder=False).map(functools.partial(packing.pad_rows, rows=rows))


def _concat(parts: tuple[dict[str, np.ndarray], ...]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def build_data(cfg: DataConfig, tokenizer: Any, *, process_index: int = 0,
               process_count: int = 1) -> DataIterator:
    """This process's batches: an endless `DataIterator` of dicts of int32 [local_batch, seq_len].

    Args:
      cfg: the pipeline config.
      tokenizer: `qwen3_jax.Tokenizer` (or any object with `encode(str) -> list[int]` and
        `endoftext_id`); unused by pre-tokenized sources except for the EOS id.
      process_index, process_count: this process and the number of processes
        (`jax.process_index()`, `jax.process_count()`).

    Raises:
      DataError: bad config, a path with no files, a missing text field, a batch that does not
        divide over the shards.
    """
    num_shards, shards, rows = shard_layout(cfg, process_index, process_count)
    docs = shard_sources(cfg, shards, num_shards)
    streams = [_shard_stream(cfg, d, tokenizer, shard, rows) for d, shard in zip(docs, shards)]
    ds = streams[0] if len(streams) == 1 else grain.experimental.ZipIterDataset(streams, strict=False).map(_concat)
    ds = ds.map(packing.add_targets)
    if cfg.worker_processes:
        from absl import flags  # grain reads absl flags in its workers

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_processes))
    layout = {"num_shards": num_shards, "shards": shards, "seq_len": cfg.seq_len, "batch_size": cfg.batch_size,
              "worker_processes": cfg.worker_processes,
              "documents": [[len(ds) for ds in per_shard] for per_shard in docs]}  # the data did not change
    return DataIterator(ds, layout)
