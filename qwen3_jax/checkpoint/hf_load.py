"""Load a Hugging Face Qwen3 checkpoint directory into our stacked param tree.

`check_checkpoint` is the one validation shared by `load` and `convert`: every safetensors file
is opened (headers checked strictly), the index must agree with the files, and names, shapes and
dtypes (floating point only) must match the config. All problems are collected first, then raised
as one `CheckpointError` that lists each of them, before any array is filled. Non-finite weights
(NaN, Inf) are found while the tensors are read and reported the same way.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from qwen3_jax.checkpoint.hf_mapping import Target, hf_tensors, is_ignored, param_shapes, to_ours
from qwen3_jax.checkpoint.safetensors_io import CheckpointError, CheckpointReader, all_finite, is_float
from qwen3_jax.config import Qwen3Config



def check_files(reader: CheckpointReader, where: str) -> None:
    """Opens every file of `reader` (headers only) and checks the index against them."""
    problems, files = [], {}
    for fp in sorted(set(reader.where.values())):  # headers only: cheap, and every bad file is named
        try:
            files[fp] = reader.open(fp)
        except CheckpointError as e:
            problems.append(f"  {e}")
    if problems:
        raise CheckpointError(f"{where}: unreadable safetensors files ({len(problems)}):\n" + "\n".join(problems))
    for name, fp in reader.where.items():
        if name not in files[fp].entries:
            problems.append(f"  {os.path.basename(fp)} lacks {name}, which the index lists")
    if problems:
        raise CheckpointError(f"{where}: index and files disagree ({len(problems)} problems):\n" + "\n".join(problems))


def check_checkpoint(reader: CheckpointReader, cfg: Qwen3Config, where: str = "checkpoint") -> list[Target]:
    """Validates the files and matches their tensors against the table; raises one error listing every problem."""
    check_files(reader, where)
    targets = list(hf_tensors(cfg))
    expected = {t.hf_name: t for t in targets}
    names = set(reader.names())
    problems = []
    missing = [n for n in expected if n not in names]
    unexpected = sorted(n for n in names if n not in expected and not is_ignored(n, cfg))
    for n in expected:
        if n in names:
            got = tuple(reader.shape(n))
            if got != expected[n].hf_shape:
                problems.append(f"  wrong shape: {n} is {list(got)}, config expects {list(expected[n].hf_shape)}")
    problems += [f"  missing: {n}" for n in missing]
    problems += [f"  unexpected: {n}" for n in unexpected]
    problems += [f"  wrong dtype: {n} is {reader.file(n).dtype(n)}, expected a float type"
                 for n in expected if n in names and not is_float(reader.file(n).dtype(n))]
    if problems:
        raise CheckpointError(
            f"{where} does not match its config ({len(problems)} problems; config: {cfg.model_type}, "
            f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, experts {cfg.num_experts}):\n"
            + "\n".join(problems))
    return targets


def _set(tree: dict, path: tuple[str, ...], value):
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


class NonFinite:
    """Collects the names of tensors holding NaN or Inf; `check` raises one error naming them all."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.names: list[str] = []

    def add(self, name: str, x: np.ndarray) -> None:
        if self.enabled and not all_finite(x):
            self.names.append(name)

    def check(self, where: str) -> None:
        if self.names:
            shown = ", ".join(self.names[:8]) + (f" and {len(self.names) - 8} more" if len(self.names) > 8 else "")
            raise CheckpointError(f"{where}: {len(self.names)} tensors hold NaN or Inf values: {shown} "
                                  "(pass check_finite=False, or --no-finite-check, to skip this check)")


def load_hf_params(path: str | os.PathLike, cfg: Qwen3Config, dtype: Any = np.float32,
                   progress: Callable[[int, int], None] | None = None, check_finite: bool = True) -> dict:
    """Reads every tensor of the checkpoint at `path` into a nested dict of NumPy arrays.

    Args:
      path: HF checkpoint directory (model.safetensors or a sharded index).
      cfg: its config (usually `Qwen3Config.from_json_file(path/config.json)`).
      dtype: dtype of the returned arrays.
      progress: optional callback(done, total) after each tensor.
      check_finite: refuse tensors holding NaN or Inf (one CheckpointError naming them).

    Returns:
      The param tree as nested dicts (see `model/transformer.py` for the layout).
    """
    reader = CheckpointReader(path)
    targets = check_checkpoint(reader, cfg, os.fspath(path))
    dtype = np.dtype(dtype)
    arrays = {p: np.empty(s, dtype) for p, s in param_shapes(cfg).items()}
    bad = NonFinite(check_finite)
    for i, t in enumerate(targets):
        x = reader.get(t.hf_name)
        bad.add(t.hf_name, x)
        arrays[t.path][t.index] = to_ours(t.rule, x, cfg).astype(dtype)
        if progress:
            progress(i + 1, len(targets))
    bad.check(os.fspath(path))
    tree: dict = {}
    for p, a in arrays.items():
        _set(tree, p, a)
    return tree
