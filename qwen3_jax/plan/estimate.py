"""A first, analytic guess of a mesh's per-chip memory and step time, before compiling anything.

The mesh search compiles only the few candidates this guess ranks best (compiles of large models
take minutes); every reported figure comes from the compiled program, never from here. The guess:

* state per chip: each param's shard (float32 master + two AdamW moments + a gradient accumulator
  for training; bfloat16 weights for serving), sharded as the rules shard it (`embed` over fsdp,
  heads / MLP over tensor, experts over expert);
* training activations with full remat: every layer's bfloat16 input kept for the backward pass,
  one layer's working set, and the float32 logits of a micro-batch (vocab split over tensor);
* serving: the KV cache and the prefill's attention scores;
* step time: model FLOPs over the slice's peak, plus the bytes the sharding must move (FSDP weight
  gathers and gradient reduce-scatters, data-parallel gradient all-reduce, tensor-parallel activation
  all-reduces, expert-parallel all-to-all) over the chip's inter-chip bandwidth.
"""

from __future__ import annotations

import math

from qwen3_jax.config import Qwen3Config
from qwen3_jax.plan import flops as flops_mod


def _param_groups(cfg: Qwen3Config) -> dict[str, int]:
    """Parameter counts by how they shard: "experts", "dense" (fsdp × tensor), "vocab" (tensor × fsdp)."""
    D, N, K, H = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    dense = experts = 0
    for kind in cfg.layer_kinds:
        dense += D * N * H * 2 + D * K * H * 2
        if kind == "moe":
            dense += D * cfg.num_experts
            experts += 3 * D * cfg.moe_intermediate_size * cfg.num_experts
        else:
            dense += 3 * D * cfg.intermediate_size
    vocab = cfg.vocab_size * D * (1 if cfg.tie_word_embeddings else 2)
    return {"dense": dense, "experts": experts, "vocab": vocab}


def _split(cfg: Qwen3Config, mesh: dict[str, int]):
    f, t, e = mesh.get("fsdp", 1), mesh.get("tensor", 1), mesh.get("expert", 1)
    g = _param_groups(cfg)
    per_chip = g["dense"] / (f * t) + g["experts"] / (f * t * e) + g["vocab"] / (f * t)
    return g, per_chip


def state_bytes(cfg: Qwen3Config, mesh: dict[str, int], task: str) -> float:
    """Params (+ optimizer state and gradients for training) on one chip."""
    _, per_chip = _split(cfg, mesh)
    return per_chip * (16 if task == "train" else 2)


def batch_shards(mesh: dict[str, int]) -> int:
    return mesh.get("data", 1) * mesh.get("fsdp", 1) * mesh.get("expert", 1)


def train_activation_bytes(cfg: Qwen3Config, mesh: dict[str, int], seq: int, rows: int) -> float:
    """Activations of one micro-batch of `rows` rows per chip (full remat)."""
    t = mesh.get("tensor", 1)
    n = rows * seq
    D, L = cfg.hidden_size, cfg.num_hidden_layers
    saved = L * n * D * 2
    width = (cfg.num_experts_per_tok * (2 * D + 3 * cfg.moe_intermediate_size) if cfg.is_moe
             else 3 * cfg.intermediate_size / t)
    layer = n * (6 * D + 3 * cfg.num_attention_heads * cfg.head_dim / t + width) * 4
    attention = rows * cfg.num_attention_heads / t * seq * seq * 4 * 2
    logits = n * cfg.vocab_size / t * 10
    return saved + layer + attention + logits


def serve_bytes(cfg: Qwen3Config, mesh: dict[str, int], seq: int, batch: int, cache_len: int) -> float:
    t = mesh.get("tensor", 1)
    rows = math.ceil(batch / batch_shards(mesh))
    kv_split = t if cfg.num_key_value_heads % t == 0 else 1
    cache = rows * cache_len * cfg.num_key_value_heads / kv_split * cfg.head_dim * 2 * 2 * cfg.num_hidden_layers
    scores = rows * cfg.num_attention_heads / t * seq * seq / 8 * 4 * 2
    return state_bytes(cfg, mesh, "serve") + cache + scores


def comm_bytes(cfg: Qwen3Config, mesh: dict[str, int], task: str, seq: int, rows: int, microbatches: int) -> float:
    """Bytes one chip sends or receives per step (rough; see the module docstring)."""
    d, f, t, e = (mesh.get(a, 1) for a in ("data", "fsdp", "tensor", "expert"))
    g, _ = _split(cfg, mesh)
    weights_bf16 = (g["dense"] + g["vocab"]) / t * 2 + g["experts"] / (t * e) * 2
    passes = 3 if task == "train" else 1
    total = microbatches * passes * weights_bf16 * (f - 1) / f
    if task == "train":
        grads = ((g["dense"] + g["vocab"]) / (f * t) + g["experts"] / (f * t * e)) * 4
        total += 2 * grads * (d * e - 1) / (d * e) if e > 1 else 2 * grads * (d - 1) / d
    n = rows * seq * microbatches
    L, D = cfg.num_hidden_layers, cfg.hidden_size
    total += passes * 2 * L * n * D * 2 * 2 * (t - 1) / t
    if cfg.is_moe and e > 1:
        total += passes * 2 * L * n * cfg.num_experts_per_tok * D * 2 * (e - 1) / e
    return total


def guess(cfg: Qwen3Config, mesh: dict[str, int], chip, chips: int, task: str, seq: int, batch: int,
          microbatches: int = 1, cache_len: int | None = None) -> dict:
    """{"bytes": per-chip memory guess, "state_bytes": ..., "seconds": step-time guess}."""
    shards = batch_shards(mesh)
    if task == "train":
        rows = max(1, batch // microbatches // shards)
        mem = state_bytes(cfg, mesh, task) + train_activation_bytes(cfg, mesh, seq, rows)
        fl = flops_mod.train_flops(cfg, batch, seq)
    else:
        rows = max(1, math.ceil(batch / shards))
        mem = serve_bytes(cfg, mesh, seq, batch, cache_len or seq)
        fl = flops_mod.forward_flops(cfg, batch, seq)
    comm = comm_bytes(cfg, mesh, task, seq, rows, microbatches if task == "train" else 1)
    ici = chip.ici_bytes_per_s or 300e9
    return {"bytes": mem, "state_bytes": state_bytes(cfg, mesh, task),
            "seconds": fl / chips / chip.peak_bf16_flops + comm / ici}
