"""The pretraining data pipeline, on grain: read, tokenize, mix, pack, shard, checkpoint.

Interface for the trainer::

    from qwen3_jax.train.data import DataConfig, build_data

    cfg = DataConfig.from_dict(yaml_data_section, seq_len=4096, batch_size=256, seed=0)
    it = build_data(cfg, tokenizer, process_index=jax.process_index(),
                    process_count=jax.process_count())
    batch = next(it)        # dict of numpy int32 arrays, each [batch_size / process_count, seq_len]
    state = it.get_state()  # UTF-8 JSON bytes; it.set_state(state) resumes exactly after this batch

`DataConfig` fields: `sources` (list of `SourceConfig` or mappings
`{path, kind, weight, text_field, pattern, min_tokens, max_tokens, name}`), `seq_len`,
`batch_size` (global rows), `seed`, `num_shards`, `shard_by`, `append_eos`, `mix_by`, `packer`, `packing_bins`,
`read_threads`, `prefetch`, `worker_processes`, `num_epochs` (see `config.DataConfig`).

A batch holds:
  tokens       the packed token ids (padding 0);
  segment_ids  1, 2, ... for the documents of a row in order, 0 on padding: a token may attend only
               to earlier tokens of the same segment id;
  positions    the position of each token in its document (restarting at 0; 0 on padding);
  targets      the next token of the same document, 0 where there is none;
  loss_mask    1 where `targets` is a real next token (not padding, not a document's last token
               in the row), else 0. The trainer's loss is the mean over loss_mask.

The pipeline, per data shard: each source's documents are split over the shards (by files when
the source has at least `num_shards` files, else by records `[shard::num_shards]`), shuffled with a
seed derived from (`seed`, source, shard) and reshuffled every epoch, tokenized with
`tokenizer.encode` plus `<|endoftext|>` (`append_eos`), filtered to the source's token bounds,
mixed over sources so that each source's share of the tokens follows its weight (`mixing`; or
grain's interleave by document counts), cut into pieces of at most `seq_len` (no token is dropped),
packed by grain's first-fit packer and batched. A process owns a contiguous block of shards and
concatenates their rows; so the global batch is the same whatever the number of processes reading
it, as long as `num_shards` is fixed (it defaults to the process count).

Resuming: save `it.get_state()` with the checkpoint (or pass `it` to
`grain.checkpoint.CheckpointSave` / `CheckpointRestore` in an orbax `Composite`); after
`set_state`, the batches are the ones an uninterrupted run would have seen. A state only restores
onto the same layout (process count, num_shards, batch_size, seq_len, worker processes, and the
same number of documents in each shard of each source); otherwise a DataError.

The three pretraining stages (Qwen3 report, arXiv 2505.09388, section 3.2) differ in their
`data:` sections; with the generated tiny corpus (`synthetic`, source paths `synthetic:KIND`):

    stage 1 (general)    sources: [{path: "synthetic:general"}]
    stage 2 (reasoning)  sources: [{path: "synthetic:reasoning", weight: 0.7},
                                   {path: "synthetic:general", weight: 0.3}]
    stage 3 (long)       sources: [{path: "synthetic:long", weight: 0.75},
                                   {path: "synthetic:short", weight: 0.25}]

For real data, stage 3's length mix is one long-document collection read twice with token bounds,
e.g. `{path: /data/long, kind: parquet, min_tokens: 16385, max_tokens: 32768, weight: 0.75}` and
`{path: /data/long, kind: parquet, min_tokens: 4097, max_tokens: 16384, weight: 0.25}` at
`seq_len: 32768`. With the Qwen3 tokenizer the synthetic documents measure (tokens with EOS,
min / median / max): general 15 / 54 / 98, reasoning 49 / 62 / 101, long 844 / 1352 / 1806,
short 193 / 482 / 762; about 200 distinct token ids in all.
"""

from qwen3_jax.train.data.arrayrecord import write_tokenized
from qwen3_jax.train.data.config import KINDS, DataConfig, DataError, SourceConfig
from qwen3_jax.train.data.iterator import DataIterator
from qwen3_jax.train.data.pipeline import build_data, open_source

__all__ = ["KINDS", "DataConfig", "DataError", "DataIterator", "SourceConfig", "build_data",
           "open_source", "write_tokenized"]
