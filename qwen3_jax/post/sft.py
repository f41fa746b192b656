"""Supervised fine-tuning on chat data, on the pretraining trainer (`qwen3_jax.train.loop.train`).

    cfg = load_config("configs/post/stage1_cold_start.yaml")
    result = sft(cfg, "runs/p1", init_from="path/to/Qwen3-0.6B")   # HF, Orbax, or a training run

The run config is the trainer's (`model`, `mesh`, `train`, `optimizer`, `checkpoint`, `log`); its
`data` section says what to train on (`SFTData`). Conversations are rendered by the project's chat
format, the loss covers assistant tokens only (`sft_data`), and they are packed into the trainer's
rows (`sft_pipeline`). Everything else is the trainer's: the jitted sharded step (with the batch's
`loss_mask` multiplying the next-token weights), checkpoints with the data position, exact resume
of a run directory, metrics and TensorBoard, `--init-from`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import jax

from qwen3_jax.config import ConfigError
from qwen3_jax.post import sft_data, sft_pipeline, synthetic
from qwen3_jax.train.config import TrainConfig

SYNTHETIC = "synthetic:"


@dataclasses.dataclass(frozen=True)
class SFTData:
    """The `data` section of an SFT config.

    Attributes:
        paths: chat JSONL files (``{"messages": [...], "tools": [...]?}`` per line), or
            ``synthetic:MODE[:N]`` for N generated arithmetic chats (MODE: think, no_think, fusion).
        tokenizer: a directory with ``tokenizer.json``; None: the ``--init-from`` checkpoint's when it
            has one (a training run records its own), else the Qwen3 tokenizer.
        overlong: a conversation longer than ``train.seq_len``: "drop" (counted) or "error".
        train_on: only the "last" assistant turn (default), or "all". History turns render with no
            think block (the chat template drops their reasoning), so training on them teaches
            replies without one; see `sft_data`'s docstring.
        packing_bins: rows the packer fills at once (0: max(8, local batch)).
        seed: seed of the synthetic data.
    """

    paths: tuple[str, ...]
    tokenizer: str | None = None
    overlong: str = "drop"
    train_on: str = "last"
    packing_bins: int = 0
    seed: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SFTData":
        """Builds the section; ConfigError names an unknown key or a bad value."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"data: unknown key(s) {unknown} for SFT (expected some of {sorted(names)})")
        if "paths" not in d:
            raise ConfigError("data.paths: give chat JSONL files or synthetic:MODE[:N]")
        paths = d["paths"]
        paths = (paths,) if isinstance(paths, str) else tuple(paths)
        out = cls(**{**d, "paths": paths})
        if not out.paths:
            raise ConfigError("data.paths is empty")
        if out.overlong not in ("drop", "error"):
            raise ConfigError(f"data.overlong={out.overlong!r} must be drop or error")
        if out.train_on not in ("all", "last"):
            raise ConfigError(f"data.train_on={out.train_on!r} must be all or last")
        return out


def load_tokenizer(path: str | None, init_from: str | None = None):
    """The tokenizer: ``path``, else ``init_from``'s tokenizer.json when present, else Qwen3's."""
    from qwen3_jax.text.tokenizer import Tokenizer

    for candidate in (path, init_from):
        if candidate and os.path.isfile(os.path.join(candidate, "tokenizer.json")):
            return Tokenizer.from_pretrained(candidate)
    if path:
        raise ConfigError(f"tokenizer: {path} holds no tokenizer.json")
    return Tokenizer.qwen3()


def read_records(paths) -> list[tuple[str, list[dict], list | None]]:
    """(where, messages, tools) of every conversation, from JSONL files or ``synthetic:MODE[:N]``."""
    out = []
    for p in paths:
        if p.startswith(SYNTHETIC):
            mode, _, n = p[len(SYNTHETIC):].partition(":")
            try:
                recs = synthetic.sft_records(int(n or 200), seed=0, mode=mode)
            except ValueError as e:
                raise ConfigError(f"data.paths: {p}: {e}") from None
            out += [(f"{p}[{i}]", r["messages"], r.get("tools")) for i, r in enumerate(recs)]
        elif not os.path.isfile(p):
            raise ConfigError(f"data.paths: {p} does not exist")
        else:
            out += list(sft_data.read_jsonl(p))
    return out


def build_sft_data(cfg: TrainConfig, tokenizer, quiet: bool = True):
    """This process's iterator of packed SFT batches, and the `PrepareStats` of the data.

    Raises:
        ConfigError / SFTDataError: bad section, missing file, bad line, or overlong with "error".
    """
    data = SFTData.from_dict(cfg.data)
    vocab = cfg.model_config().vocab_size
    if len(tokenizer) > vocab:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} ids but the model's vocabulary only {vocab}")
    records = read_records(data.paths)
    iterable = records
    if not quiet and jax.process_index() == 0:
        from tqdm.auto import tqdm

        iterable = tqdm(records, desc="tokenize", unit="conv")
    samples = [sft_data.tokenize_chat(m, tokenizer, tools=t, train_on=data.train_on, where=w)
               for w, m, t in iterable]
    kept, stats = sft_pipeline.prepare(samples, cfg.train.seq_len, data.overlong)
    n_proc = jax.process_count()
    ds = sft_pipeline.packed_batches(kept, cfg.train.seq_len, cfg.train.batch_size // n_proc, seed=cfg.train.seed,
                                     bins=data.packing_bins, shard_index=jax.process_index(), shard_count=n_proc)
    return sft_pipeline.BatchIterator(ds), stats


def sft(cfg: TrainConfig, run_dir: str | os.PathLike, init_from: str | None = None, stop_at: int | None = None,
        quiet: bool = False, devices=None, tokenizer=None):
    """Runs (or resumes) an SFT run; returns the trainer's `RunResult` (plus ``data_stats``).

    Every metrics record also carries ``data/conversations`` (kept) and ``data/dropped_overlong``
    (conversations longer than ``train.seq_len``, dropped with ``data.overlong: drop``).

    Args:
        cfg: the run config; its ``data`` section is an `SFTData`.
        run_dir: the run directory (resumed when it holds a checkpoint).
        init_from: starting weights: a training run, an Orbax or a Hugging Face directory.
        stop_at: stop (with a checkpoint) after this step.
        quiet: no progress bars or messages.
        devices: the mesh's devices (default all).
        tokenizer: a `Tokenizer` (default: see `SFTData.tokenizer`).
    """
    from qwen3_jax.train.loop import train
    from qwen3_jax.train.step import BATCH_KEYS, LOSS_MASK

    cfg.validate()
    if tokenizer is None:
        tokenizer = load_tokenizer(SFTData.from_dict(cfg.data).tokenizer, init_from)
    it, stats = build_sft_data(cfg, tokenizer, quiet)
    if not quiet and jax.process_index() == 0:
        print(f"sft data: {stats.kept} conversations ({stats.dropped_overlong} longer than seq_len "
              f"{cfg.train.seq_len} dropped), {stats.assistant_tokens} of {stats.tokens} tokens trained on")
    result = train(cfg, run_dir, init_from=init_from, stop_at=stop_at, data=it, quiet=quiet, devices=devices,
                   batch_keys=BATCH_KEYS + (LOSS_MASK,), tokenizer=tokenizer,
                   extra_metrics={"data/conversations": float(stats.kept),
                                  "data/dropped_overlong": float(stats.dropped_overlong)})
    result.data_stats = stats
    return result
