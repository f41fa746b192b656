"""Helpers for tests and benchmarks: small random Hugging Face checkpoints written by transformers.

These need `torch` and `transformers` (the `test` extra). Weights are drawn with a larger std than
the HF init (0.02) so that every layer visibly changes the logits and routing is not uniform.
"""

from __future__ import annotations

import os
from typing import Any

SMALL_DENSE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
                   rope_theta=1_000_000.0, rms_norm_eps=1e-6)
SMALL_MOE = dict(SMALL_DENSE, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                 norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[])


def hf_model(kind: str = "dense", seed: int = 0, std: float = 0.1, **overrides: Any):
    """A random transformers Qwen3ForCausalLM / Qwen3MoeForCausalLM (float32, eval mode)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    if kind == "dense":
        model = Qwen3ForCausalLM(Qwen3Config(**{**SMALL_DENSE, **overrides}))
    elif kind == "moe":
        model = Qwen3MoeForCausalLM(Qwen3MoeConfig(**{**SMALL_MOE, **overrides}))
    else:
        raise ValueError(f"kind must be 'dense' or 'moe', got {kind!r}")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
    return model.eval()


def write_hf_checkpoint(path: str | os.PathLike, kind: str = "dense", seed: int = 0, dtype: str = "float32",
                        max_shard_size: str | None = None, **overrides: Any):
    """Writes a random checkpoint with `save_pretrained` (hub layout); returns the torch model."""
    import torch

    model = hf_model(kind, seed, **overrides)
    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(os.fspath(path), **kw)
    return model
