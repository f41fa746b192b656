"""Our Orbax directory -> Hugging Face safetensors checkpoint (for transformers and vLLM).

The inverse of `convert`: every stacked param is restored on its own, split back into its
per-layer (and per-expert) HF tensors with the name table (`hf_tensors` + `to_hf`), and streamed
into safetensors shards of at most `max_shard_size` bytes (with `model.safetensors.index.json`
when there is more than one). The shard plan (names, shapes, dtypes) is fixed up front from the
checkpoint metadata, so each shard's header is known before its data is written and only one
stacked param is in memory at a time. Bytes are written as they are stored: bfloat16 stays
bit-exact. A training run directory exports its newest checkpoint's params with the tokenizer the
run used (`train.run_tokenizer`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

import numpy as np

from qwen3_jax.checkpoint import orbax_io, staging
from qwen3_jax.checkpoint.convert import _progress, group_by_param
from qwen3_jax.checkpoint.hf_mapping import hf_tensors, to_hf
from qwen3_jax.checkpoint.safetensors_write import Entry, parse_size, write_tensors

DEFAULT_MAX_SHARD_SIZE = "5GB"


def export(src: str | os.PathLike, dst: str | os.PathLike, dtype: Any = None,
           max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE, force: bool = False, progress: bool = True,
           log: Callable[[str], None] | None = None, verify: bool = True) -> dict:
    """Writes a HF checkpoint directory from a converted Orbax directory or a training run.

    Args:
      src: directory written by `qwen3-jax convert` (or by training code using `orbax_io`), or a
        `qwen3-jax train` run directory (its newest complete checkpoint is exported, with the
        tokenizer the run used and a generation_config.json for it; see `train.run_tokenizer`).
      dst: output directory; must not exist unless `force`.
      dtype: dtype of the written tensors; None keeps the stored dtypes.
      max_shard_size: largest safetensors file ("5GB", "500MB", or bytes).
      force: replace an existing `dst`, once the new one is complete.
      progress: show a tqdm bar on stderr.
      log: optional callback for one-line messages.
      verify: compare every stored array with its checksum (see `orbax_io`).

    Returns:
      A summary dict (tensors, bytes, files).
    """
    src = os.fspath(src)
    from qwen3_jax.train import checkpoint as train_ckpt  # a training run directory is a source too

    run = None
    if orbax_io.is_orbax_dir(src):
        cfg = orbax_io.read_config(src)
        saved = orbax_io.check_params(src, cfg)
        sums = orbax_io.read_checksums(src) if verify else None
        if verify and sums is None:
            orbax_io._warn_unverified(src)
        read_param = lambda path, shape, stored: orbax_io.restore_param(  # noqa: E731
            src, path, shape, stored, verify=verify, checksums=sums)
    elif train_ckpt.is_run_dir(src):  # the newest complete checkpoint's float32 master params
        run = train_ckpt.ParamSource(src)
        cfg, saved = run.config, orbax_io.check_saved(src, run.saved, run.config)
        read_param = lambda path, shape, stored: run.read(path)  # noqa: E731
    else:
        raise FileNotFoundError(f"{src} is not a qwen3-jax Orbax checkpoint (expected {orbax_io.PARAMS_DIR}/ "
                                f"and {orbax_io.CONFIG_FILE}; make one with `qwen3-jax convert`) nor a training "
                                f"run directory with a complete checkpoint")
    staging.check_not_overlapping(src, dst)
    dst = staging.check_output(dst, force)
    max_bytes = parse_size(max_shard_size)
    groups = group_by_param(list(hf_tensors(cfg)))
    out_dtype = {p: np.dtype(dtype) if dtype is not None else saved[p][1] for p in groups}
    entries = [Entry(t.hf_name, t.hf_shape, out_dtype[p]) for p, ts in groups.items() for t in ts]
    total = sum(e.nbytes for e in entries)
    if log:
        log(f"exporting {len(entries)} tensors ({total / 2**30:.2f} GiB) from {len(groups)} stacked params")

    def tensors(bar):
        done = 0
        for path, ts in groups.items():
            staging.poll_interrupt()
            shape, stored = saved[path]
            arr = read_param(path, shape, stored)
            for t in ts:
                staging.poll_interrupt()
                x = np.asarray(to_hf(t.rule, arr[t.index], cfg)).astype(out_dtype[path], copy=False)
                yield t.hf_name, x
                bar.update(x.nbytes)
                done += 1
                bar.set_postfix_str(f"{done}/{len(entries)} tensors")
            del arr
            orbax_io.release_freed_memory()

    with staging.staged_directory(dst, force) as tmp:
        bar = _progress(total, progress, "export")
        files = write_tensors(tmp, tensors(bar), entries, max_bytes)
        bar.close()
        hf = cfg.to_hf_dict()
        hf["torch_dtype"] = out_dtype[("embed_tokens", "embedding")].name
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(hf, f, indent=2)
        copied = staging.copy_aux_files(src, tmp) if run is None else _run_tokenizer_files(src, tmp)
    return {"tensors": len(entries), "bytes": total, "files": files, "copied": copied, "output": dst}


def _run_tokenizer_files(run_dir: str, out: str) -> list[str]:
    """Writes the tokenizer a training run used, and a generation_config.json for it, into `out`.

    A run without a recoverable tokenizer (see `train.run_tokenizer`) is exported without one;
    one line on stderr says so.
    """
    from qwen3_jax.train import run_tokenizer

    tok, why = run_tokenizer.recover(run_dir)
    if tok is None:
        print(f"qwen3-jax export: no tokenizer written for {run_dir}: {why}", file=sys.stderr)
        return []
    tok.save(out)
    with open(os.path.join(out, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump(tok.generation_config(), f, indent=2)
    return ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]
