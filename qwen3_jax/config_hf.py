"""Qwen3Config <-> a Hugging Face `config.json`.

It reads the `config.json` of both transformers generations:
* 4.51+ (released Qwen3 checkpoints): `rope_theta`, `rope_scaling`, `num_experts`;
* 5.x (`save_pretrained` today): `rope_parameters: {rope_theta, rope_type, ...}`, `num_local_experts`.

A key that a config.json leaves out takes the same default here as in transformers: the
`Qwen3Config` dataclass defaults are transformers' `Qwen3Config` ones, and for a "qwen3_moe" file
the few shared fields whose `Qwen3MoeConfig` default differs come from `HF_MOE_DEFAULTS`.
`Qwen3Config.from_hf_dict`, `.from_json_file` and `.to_hf_dict` call the functions here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from qwen3_jax.config import ConfigError, DualChunkAttention, Qwen3Config, RopeScaling

MODEL_TYPES = ("qwen3", "qwen3_moe")
# transformers' Qwen3MoeConfig defaults where they differ from Qwen3Config's (the dataclass
# defaults); head_dim None: hidden_size // num_attention_heads, as the MoE attention takes it.
HF_MOE_DEFAULTS = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=24, num_key_value_heads=4,
                       head_dim=None, num_experts=128)


def from_hf_dict(d: Mapping[str, Any], name: str = "", cls: type[Qwen3Config] = Qwen3Config) -> Qwen3Config:
    """Builds a config from a parsed `config.json` (transformers 4.51+ or 5.x names).

    A key left out takes transformers' default for the file's model_type (the dataclass
    defaults, and `HF_MOE_DEFAULTS` for "qwen3_moe"), so a file means here what it means
    there; `save_pretrained` may leave out keys equal to those defaults.
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"config.json must hold a JSON object, got a {type(d).__name__}")
    mt = d.get("model_type")
    if mt not in MODEL_TYPES:
        raise ConfigError(
            f"config.json model_type={mt!r} is not a Qwen3 model (expected one of {MODEL_TYPES})")
    if d.get("attention_bias"):
        raise ConfigError("config.json attention_bias=true: Qwen3 has no QKV bias; not supported")
    if d.get("use_sliding_window"):
        raise ConfigError("config.json use_sliding_window=true: sliding-window attention is not supported")
    if d.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"config.json hidden_act={d['hidden_act']!r}: only 'silu' is supported")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    if mt == "qwen3_moe":
        defaults.update(HF_MOE_DEFAULTS)

    def get(key):
        return d[key] if key in d else defaults[key]

    def number(key, kind=(int, float)):
        v = get(key)
        if v is None or isinstance(v, bool) or not isinstance(v, kind):
            raise ConfigError(f"config.json {key}={v!r} must be {'an integer' if kind is int else 'a number'}, "
                              f"got {type(v).__name__}")
        return v

    for key, kind in (("rope_parameters", Mapping), ("rope_scaling", Mapping),
                      ("dual_chunk_attention_config", Mapping), ("mlp_only_layers", list)):
        if d.get(key) is not None and not isinstance(d[key], kind):
            raise ConfigError(f"config.json {key} must be {'an object' if kind is Mapping else 'a list'}, "
                              f"got {d[key]!r:.60}")
    layers = d.get("mlp_only_layers") or []
    if any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
        raise ConfigError(f"config.json mlp_only_layers={layers!r:.60} must be a list of integer layer indices")
    rope = d.get("rope_parameters") or {}
    rope_theta = d.get("rope_theta", rope.get("rope_theta", defaults["rope_theta"]))
    if isinstance(rope_theta, bool) or not isinstance(rope_theta, (int, float)):
        raise ConfigError(f"config.json rope_theta={rope_theta!r} must be a number")
    scaling = d.get("rope_scaling")
    if scaling is None and rope.get("rope_type", "default") not in ("default", None):
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    if scaling is not None:
        scaling = dict(scaling)
        rtype = scaling.get("rope_type", scaling.get("type", "default"))
        scaling = None if rtype == "default" else RopeScaling.from_dict(scaling)

    num_experts = 0
    if mt == "qwen3_moe":
        key = "num_local_experts" if "num_local_experts" in d and "num_experts" not in d else "num_experts"
        num_experts = number(key, int)
        if num_experts <= 0:
            raise ConfigError(f"config.json model_type='qwen3_moe' but {key}={num_experts}")
    heads = number("num_attention_heads", int)
    # null (not left out) means "as many as the query heads" / "hidden_size // heads", as in transformers
    kv_heads = heads if "num_key_value_heads" in d and d["num_key_value_heads"] is None else get(
        "num_key_value_heads")
    head_dim = get("head_dim") or number("hidden_size", int) // max(heads, 1)
    eos = get("eos_token_id")
    kw = dict(
        vocab_size=get("vocab_size"),
        hidden_size=get("hidden_size"),
        intermediate_size=get("intermediate_size"),
        num_hidden_layers=get("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=get("rms_norm_eps"),
        rope_theta=float(rope_theta),
        rope_scaling=scaling,
        max_position_embeddings=get("max_position_embeddings"),
        tie_word_embeddings=get("tie_word_embeddings"),
        bos_token_id=get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        name=name or d.get("_name_or_path", "") or "",
    )
    if d.get("dual_chunk_attention_config") is not None:
        kw["dual_chunk_attention_config"] = DualChunkAttention.from_dict(dict(d["dual_chunk_attention_config"]))
    if num_experts:
        kw.update(
            num_experts=num_experts,
            num_experts_per_tok=get("num_experts_per_tok"),
            moe_intermediate_size=get("moe_intermediate_size"),
            norm_topk_prob=get("norm_topk_prob"),
            decoder_sparse_step=get("decoder_sparse_step"),
            mlp_only_layers=tuple(get("mlp_only_layers") or ()),
            router_aux_loss_coef=get("router_aux_loss_coef"),
        )
    return cls(**kw)


def from_json_file(path: str | os.PathLike, cls: type[Qwen3Config] = Qwen3Config) -> Qwen3Config:
    """Reads a `config.json` file; errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"no config.json at {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a config.json file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    try:
        return from_hf_dict(d, name=os.path.basename(os.path.dirname(os.path.abspath(path))), cls=cls)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def to_hf_dict(cfg: Qwen3Config) -> dict[str, Any]:
    """A `config.json` that transformers 4.51+ and 5.x both read.

    It writes the 4.51 names (`rope_theta`, `rope_scaling`, `num_experts`), which 5.x still accepts,
    and adds the 5.x `rope_parameters` so newer readers need no conversion.
    """
    d: dict[str, Any] = {
        "architectures": ["Qwen3MoeForCausalLM" if cfg.is_moe else "Qwen3ForCausalLM"],
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": cfg.rope_scaling.to_dict() if cfg.rope_scaling else None,
        "max_position_embeddings": cfg.max_position_embeddings,
        "max_window_layers": cfg.num_hidden_layers,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": list(cfg.eos_token_id) if isinstance(cfg.eos_token_id, tuple) else cfg.eos_token_id,
        "torch_dtype": "bfloat16",
    }
    if cfg.dual_chunk_attention_config is not None:
        d["dual_chunk_attention_config"] = cfg.dual_chunk_attention_config.to_dict()
    rp = {"rope_theta": cfg.rope_theta, "rope_type": "default"}
    if cfg.rope_scaling:
        rp.update(cfg.rope_scaling.to_dict())
    d["rope_parameters"] = rp
    if cfg.is_moe:
        d.update(
            num_experts=cfg.num_experts,
            num_experts_per_tok=cfg.num_experts_per_tok,
            moe_intermediate_size=cfg.moe_intermediate_size,
            norm_topk_prob=cfg.norm_topk_prob,
            decoder_sparse_step=cfg.decoder_sparse_step,
            mlp_only_layers=list(cfg.mlp_only_layers),
            router_aux_loss_coef=cfg.router_aux_loss_coef,
            output_router_logits=False,
        )
    return d
