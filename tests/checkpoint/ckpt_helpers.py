"""Shared pieces of the checkpoint tests: tiny HF checkpoints with tokenizer files, bit comparison."""

from __future__ import annotations

import json
import os

import numpy as np

IDS = np.array([[1, 5, 9, 200, 33, 7, 120, 64, 3, 250, 17, 42]], dtype=np.int64)
# Stand-ins for the tokenizer files the converter must carry along (content is irrelevant here).
AUX = {"tokenizer.json": '{"version": "1.0"}', "tokenizer_config.json": '{"model_max_length": 512}',
       "vocab.json": "{}", "merges.txt": "#version: 0.2\n"}


def make_hf_dir(path, kind="dense", dtype="float32", max_shard_size=None, **overrides):
    """A random HF checkpoint written by transformers, plus tokenizer stand-ins; returns the torch model."""
    from qwen3_jax.testing import write_hf_checkpoint

    model = write_hf_checkpoint(path, kind=kind, dtype=dtype, max_shard_size=max_shard_size, **overrides)
    for name, text in AUX.items():
        with open(os.path.join(path, name), "w", encoding="utf-8") as f:
            f.write(text)
    return model


def read_all(path):
    """Every tensor of a HF directory via the `safetensors` library (independent of our reader)."""
    from safetensors.torch import load_file

    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    out = {}
    for f in files:
        out.update(load_file(os.path.join(path, f)))
    return out


def bits(t):
    """A torch tensor's raw bits as integers, so comparisons are exact (NaN and -0.0 included)."""
    import torch

    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(ints)


def hf_logits(model, ids=IDS):
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(ids)).logits.float().numpy()


def config_json(path):
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        return json.load(f)
