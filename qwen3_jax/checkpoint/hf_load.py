"""Load a Hugging Face Qwen3 checkpoint directory into our stacked param tree.

All problems are collected first (missing tensors, unexpected tensors, wrong shapes), then raised
as one `CheckpointError` that lists each of them, before any array is filled.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from qwen3_jax.checkpoint.hf_mapping import Target, hf_tensors, param_shapes, to_ours
from qwen3_jax.checkpoint.safetensors_io import CheckpointError, CheckpointReader
from qwen3_jax.config import Qwen3Config

# Tensors a HF checkpoint may hold that carry no parameter of ours.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def check_checkpoint(reader: CheckpointReader, cfg: Qwen3Config) -> list[Target]:
    """Matches the checkpoint's tensors against the table; raises one error listing every problem."""
    targets = list(hf_tensors(cfg))
    expected = {t.hf_name: t for t in targets}
    names = set(reader.names())
    problems = []
    missing = [n for n in expected if n not in names]
    unexpected = sorted(
        n for n in names
        if n not in expected
        and not n.endswith(_IGNORED_SUFFIXES)
        and not (n == "lm_head.weight" and cfg.tie_word_embeddings)  # tied: a stored copy is ignored
    )
    for n in expected:
        if n in names:
            got = tuple(reader.shape(n))
            if got != expected[n].hf_shape:
                problems.append(f"  wrong shape: {n} is {list(got)}, config expects {list(expected[n].hf_shape)}")
    problems += [f"  missing: {n}" for n in missing]
    problems += [f"  unexpected: {n}" for n in unexpected]
    if problems:
        raise CheckpointError(
            f"checkpoint does not match its config ({len(problems)} problems; config: {cfg.model_type}, "
            f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, experts {cfg.num_experts}):\n"
            + "\n".join(problems))
    return targets


def _set(tree: dict, path: tuple[str, ...], value):
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def load_hf_params(path: str | os.PathLike, cfg: Qwen3Config, dtype: Any = np.float32,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Reads every tensor of the checkpoint at `path` into a nested dict of NumPy arrays.

    Args:
      path: HF checkpoint directory (model.safetensors or a sharded index).
      cfg: its config (usually `Qwen3Config.from_json_file(path/config.json)`).
      dtype: dtype of the returned arrays.
      progress: optional callback(done, total) after each tensor.

    Returns:
      The param tree as nested dicts (see `model/transformer.py` for the layout).
    """
    reader = CheckpointReader(path)
    targets = check_checkpoint(reader, cfg)
    dtype = np.dtype(dtype)
    arrays = {p: np.empty(s, dtype) for p, s in param_shapes(cfg).items()}
    for i, t in enumerate(targets):
        arrays[t.path][t.index] = to_ours(t.rule, reader.get(t.hf_name), cfg).astype(dtype)
        if progress:
            progress(i + 1, len(targets))
    tree: dict = {}
    for p, a in arrays.items():
        _set(tree, p, a)
    return tree
