"""Hugging Face safetensors checkpoint -> our Orbax directory, one stacked parameter at a time.

Memory is bounded by the largest stacked parameter, not by the model: for each param path of
the name table, its HF tensors (every layer, every expert) are read from the memory-mapped
files into one preallocated array in our layout, that array is added to the Orbax checkpoint
(`orbax_io.ParamWriter`), and it is dropped before the next one is built.

Nothing is written before the whole source has been validated (`validate_source`; non-finite
values are found while the tensors are read and abort the run), and the output appears only when
complete (`staging.staged_directory`).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import numpy as np

from qwen3_jax.checkpoint import orbax_io, staging
from qwen3_jax.checkpoint.hf_load import NonFinite, check_checkpoint
from qwen3_jax.checkpoint.hf_mapping import Target, param_shapes, to_ours
from qwen3_jax.checkpoint.safetensors_io import CheckpointReader
from qwen3_jax.config import Qwen3Config


def validate_source(src: str | os.PathLike) -> tuple[Qwen3Config, CheckpointReader, list[Target]]:
    """Checks a HF checkpoint directory completely before anything is written.

    Opens every safetensors file (a truncated file or a corrupt header is reported per file),
    and matches names, shapes and dtypes against the config: `hf_load.check_checkpoint`, the
    validation `qwen3_jax.load` runs too.

    Returns:
      (config, reader, targets) ready for `convert`.

    Raises:
      FileNotFoundError, ConfigError, CheckpointError: with a message naming every problem.
    """
    src = os.fspath(src)
    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src} is not a directory")
    cfg = Qwen3Config.from_json_file(os.path.join(src, "config.json"))
    reader = CheckpointReader(src)
    targets = check_checkpoint(reader, cfg, src)
    return cfg, reader, targets


def group_by_param(targets: list[Target]) -> dict[tuple[str, ...], list[Target]]:
    """Targets grouped by our param path, in table order (each group fills one stacked array)."""
    groups: dict[tuple[str, ...], list[Target]] = {}
    for t in targets:
        groups.setdefault(t.path, []).append(t)
    return groups


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)


def convert(src: str | os.PathLike, dst: str | os.PathLike, dtype: Any = None, mesh=None, force: bool = False,
            progress: bool = True, log: Callable[[str], None] | None = None, check_finite: bool = True) -> dict:
    """Converts a HF Qwen3 checkpoint directory into an Orbax directory.

    Args:
      src: HF directory (config.json, model.safetensors or a sharded index, tokenizer files).
      dst: output directory; must not exist unless `force`.
      dtype: param dtype to store ("bfloat16", "float32", ...); None keeps each tensor's dtype.
      mesh: optional mesh; arrays are laid out (and chunked on disk) as `param_shardings` says.
      force: replace an existing `dst`, once the new one is complete.
      progress: show a tqdm bar of tensors and bytes on stderr.
      log: optional callback for one-line messages.
      check_finite: refuse tensors holding NaN or Inf (found while converting; the output is then
        not written and one CheckpointError names them all).

    Returns:
      A summary dict (params, tensors, bytes, largest stacked param bytes, copied files).
    """
    staging.check_not_overlapping(src, dst)
    src, dst = os.path.abspath(os.fspath(src)), staging.check_output(dst, force)
    cfg, reader, targets = validate_source(src)
    groups = group_by_param(targets)
    shapes = param_shapes(cfg)
    out_dtype = {p: np.dtype(dtype) if dtype is not None else reader.file(ts[0].hf_name).dtype(ts[0].hf_name)
                 for p, ts in groups.items()}
    largest = max(int(np.prod(shapes[p])) * out_dtype[p].itemsize for p in groups)
    total = sum(int(np.prod(t.hf_shape)) * reader.file(t.hf_name).dtype(t.hf_name).itemsize for t in targets)
    shardings = orbax_io._target_shardings(cfg, mesh) if mesh is not None else None
    if log:
        log(f"converting {len(targets)} tensors ({total / 2**30:.2f} GiB) into {len(groups)} stacked params; "
            f"largest {largest / 2**20:.0f} MiB")
    with staging.staged_directory(dst, force) as tmp:
        writer = orbax_io.ParamWriter(tmp)
        bar = _progress(total, progress, "convert")
        done = 0
        bad = NonFinite(check_finite)
        for path, ts in groups.items():
            arr = np.empty(shapes[path], out_dtype[path])
            for t in ts:
                staging.poll_interrupt()
                x = reader.get(t.hf_name)  # memory-mapped; unmapped again when x goes away
                bad.add(t.hf_name, x)
                arr[t.index] = to_ours(t.rule, x, cfg)  # the assignment casts when dtypes differ
                bar.update(x.nbytes)
                del x
                done += 1
                bar.set_postfix_str(f"{done}/{len(targets)} tensors")
            crc = orbax_io.checksum(arr)
            if shardings is not None:
                import jax

                host = arr
                arr = jax.make_array_from_callback(host.shape, shardings[path], lambda idx: host[idx])
                del host
            staging.poll_interrupt()
            writer.save(path, arr, crc)
            del arr
        bar.close()
        bad.check(src)
        writer.finalize()
        orbax_io.write_config(tmp, cfg)
        copied = staging.copy_aux_files(src, tmp)
    return {"params": len(groups), "tensors": len(targets), "bytes": total, "largest_param_bytes": largest,
            "copied": copied, "output": dst}
