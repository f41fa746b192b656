"""Presets for the 8 released Qwen3 models, plus tiny shapes for tests and demos.

The numbers come from the released `config.json` files on the Hugging Face hub (Qwen/Qwen3-*) and Table 1-2 of the Qwen3 technical report (arXiv 2505.09388). This module is
the single source: `configs/models/*.yaml` are generated from it (`qwen3-jax presets --write
configs/models`) and a test checks the files still match.

Every released model shares: vocab 151,936, head_dim 128, rms_norm_eps 1e-6, rope_theta 1e6,
max_position_embeddings 40,960, bos 151643, eos 151645. The MoE models use 128 experts, top-8,
norm_topk_prob, every layer sparse, router_aux_loss_coef 0.001.
"""

from __future__ import annotations

import os

import yaml

from qwen3_jax.config import Qwen3Config

# What every released model shares, spelled out: the dataclass defaults are transformers' (config.py).
_RELEASED = dict(vocab_size=151936, head_dim=128, rms_norm_eps=1e-6, rope_theta=1_000_000.0,
                 max_position_embeddings=40960, bos_token_id=151643, eos_token_id=151645)
_DENSE = dict(num_experts=0)
_MOE = dict(num_experts=128, num_experts_per_tok=8, norm_topk_prob=True, decoder_sparse_step=1,
            mlp_only_layers=(), router_aux_loss_coef=0.001)


def _p(name, hidden, inter, layers, heads, kv, tie, **extra) -> Qwen3Config:
    return Qwen3Config(name=name, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=tie,
                       **_RELEASED, **extra)


PRESETS: dict[str, Qwen3Config] = {
    c.name: c
    for c in (
        _p("Qwen3-0.6B", 1024, 3072, 28, 16, 8, True, **_DENSE),
        _p("Qwen3-1.7B", 2048, 6144, 28, 16, 8, True, **_DENSE),
        _p("Qwen3-4B", 2560, 9728, 36, 32, 8, True, **_DENSE),
        _p("Qwen3-8B", 4096, 12288, 36, 32, 8, False, **_DENSE),
        _p("Qwen3-14B", 5120, 17408, 40, 40, 8, False, **_DENSE),
        _p("Qwen3-32B", 5120, 25600, 64, 64, 8, False, **_DENSE),
        _p("Qwen3-30B-A3B", 2048, 6144, 48, 32, 4, False, moe_intermediate_size=768, **_MOE),
        _p("Qwen3-235B-A22B", 4096, 12288, 94, 64, 4, False, moe_intermediate_size=1536, **_MOE),
        # Small random-weight shapes for tests, demos and CPU benchmarks (not released models).
        # They keep the real vocabulary and special ids so the real tokenizer works with them.
        Qwen3Config(name="tiny-dense", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                    **{**_RELEASED, "head_dim": 32, "max_position_embeddings": 4096}),
        Qwen3Config(name="tiny-moe", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, num_experts=8,
                    num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True,
                    **{**_RELEASED, "head_dim": 32, "max_position_embeddings": 4096}),
    )
}

RELEASED = tuple(n for n in PRESETS if n.startswith("Qwen3-"))


def get_preset(name: str) -> Qwen3Config:
    """Returns the preset called `name` (case-insensitive, e.g. "qwen3-8b" or "Qwen3-30B-A3B")."""
    for key, cfg in PRESETS.items():
        if key.lower() == name.lower():
            return cfg
    raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")


def yaml_text(cfg: Qwen3Config) -> str:
    """The YAML form of a preset, as written to configs/models/."""
    header = (f"# {cfg.name}: generated from qwen3_jax/presets.py by `qwen3-jax presets --write "
              f"configs/models`.\n# Do not edit by hand; tests/test_config.py checks it matches.\n")
    return header + yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def yaml_filename(name: str) -> str:
    return name.lower() + ".yaml"


def load_yaml(path: str | os.PathLike) -> Qwen3Config:
    """Reads a model YAML (our field names) into a config."""
    with open(path, encoding="utf-8") as f:
        return Qwen3Config.from_dict(yaml.safe_load(f))


def write_yaml_files(directory: str | os.PathLike) -> list[str]:
    """Writes one YAML file per preset into `directory` (atomically, file by file)."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for cfg in PRESETS.values():
        path = os.path.join(directory, yaml_filename(cfg.name))
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(yaml_text(cfg))
        os.replace(path + ".tmp", path)
        paths.append(path)
    return paths
