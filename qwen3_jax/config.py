"""The Qwen3 architecture config: one frozen dataclass for the dense and the MoE models.

`Qwen3Config` holds only architecture facts (what a checkpoint's `config.json` says). Runtime
choices (compute dtype, remat, MoE kernel) are arguments of the model, not config fields.

It reads the `config.json` of both transformers generations:
* 4.51+ (released Qwen3 checkpoints): `rope_theta`, `rope_scaling`, `num_experts`;
* 5.x (`save_pretrained` today): `rope_parameters: {rope_theta, rope_type, ...}`, `num_local_experts`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

MODEL_TYPES = ("qwen3", "qwen3_moe")


class ConfigError(ValueError):
    """A config that is not a Qwen3 config, or whose values contradict each other."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """YaRN (or linear) RoPE scaling, as in `rope_scaling` of config.json.

    Attributes:
      rope_type: "yarn" or "linear".
      factor: context extension factor (4.0 for Qwen3's 131,072 tokens).
      original_max_position_embeddings: the pretraining context (32,768 for Qwen3).
      beta_fast, beta_slow: YaRN correction range in rotations (defaults 32 and 1).
      attention_factor: overrides the YaRN attention scaling 0.1·ln(factor)+1 when set.
    """

    rope_type: str = "yarn"
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"rope_type": self.rope_type, "factor": self.factor}
        if self.original_max_position_embeddings is not None:
            d["original_max_position_embeddings"] = self.original_max_position_embeddings
        if self.rope_type == "yarn":
            d["beta_fast"], d["beta_slow"] = self.beta_fast, self.beta_slow
        if self.attention_factor is not None:
            d["attention_factor"] = self.attention_factor
        return d


@dataclasses.dataclass(frozen=True)
class DualChunkAttention:
    """Dual Chunk Attention settings, as in `dual_chunk_attention_config` of config.json.

    Qwen2.5-1M and the 1M-context Qwen3-2507 configs carry this block; see
    `ops.dual_chunk_attention` for what it does. Keys of the block that only tune vLLM's sparse
    attention (`sparse_attention_*`) are not kept: they change speed, not the result.

    Attributes:
      chunk_size: c, the largest relative distance a logit may see.
      local_size: l; keys repeat their rotary position every chunk_size - local_size tokens.
      original_max_position_embeddings: o, the trained context of the length factor
        max(1, 0.1·ln(L / o) + 1) on queries and keys; 0 for none.
    """

    chunk_size: int
    local_size: int
    original_max_position_embeddings: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Qwen3Config:
    """Architecture of a Qwen3 model (dense when `num_experts == 0`).

    Attributes:
      vocab_size: rows of the embedding (151,936; the tokenizer uses 151,669 of them).
      hidden_size: model width D.
      intermediate_size: width F of the dense SwiGLU MLP (unused by all-MoE models).
      num_hidden_layers: L.
      num_attention_heads: query heads N.
      num_key_value_heads: KV heads K (GQA; N must be a multiple of K).
      head_dim: H, 128 for every released model; NOT hidden_size / heads.
      rms_norm_eps: epsilon of every RMSNorm, q/k norms included.
      rope_theta: RoPE base (1e6 after ABF).
      rope_scaling: optional YaRN scaling (not used with dual chunk attention, as in vLLM).
      max_position_embeddings: context the config advertises (40,960).
      tie_word_embeddings: the LM head reuses the embedding (0.6B, 1.7B, 4B).
      num_experts: E; 0 for dense models.
      num_experts_per_tok: top-k of the router.
      moe_intermediate_size: width of each expert's SwiGLU MLP.
      norm_topk_prob: renormalise the top-k router probabilities to sum to 1.
      decoder_sparse_step: layer i is MoE when (i + 1) % step == 0 (and not in mlp_only_layers).
      mlp_only_layers: layer indices forced to use the dense MLP.
      router_aux_loss_coef: weight of the load-balancing loss.
      bos_token_id, eos_token_id: as in config.json (eos may be a tuple).
      dual_chunk_attention_config: optional Dual Chunk Attention (replaces the RoPE scaling).
      name: the preset or checkpoint name, informational.
    """

    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 12288
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 40960
    tie_word_embeddings: bool = False
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    router_aux_loss_coef: float = 0.001
    bos_token_id: int | None = 151643
    eos_token_id: int | tuple[int, ...] | None = 151645
    dual_chunk_attention_config: DualChunkAttention | None = None
    name: str = ""

    def __post_init__(self):
        layers = self.mlp_only_layers
        if isinstance(layers, (list, tuple)) and all(isinstance(i, int) for i in layers):
            layers = tuple(sorted(layers))
        elif not isinstance(layers, tuple):
            layers = (layers,)  # reported by validate()
        object.__setattr__(self, "mlp_only_layers", layers)
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        if isinstance(self.rope_scaling, Mapping):
            object.__setattr__(self, "rope_scaling", _rope_scaling_from_dict(dict(self.rope_scaling)))
        if isinstance(self.dual_chunk_attention_config, Mapping):
            object.__setattr__(self, "dual_chunk_attention_config",
                               _dual_chunk_from_dict(dict(self.dual_chunk_attention_config)))
        self.validate()

    # ---- derived facts -------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def model_type(self) -> str:
        return "qwen3_moe" if self.is_moe else "qwen3"

    def is_moe_layer(self, i: int) -> bool:
        """Whether layer `i` holds a sparse MoE block (the rule of the reference implementation)."""
        return (
            self.is_moe
            and i not in self.mlp_only_layers
            and (i + 1) % self.decoder_sparse_step == 0
        )

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        """'moe' or 'dense' for every layer, in order."""
        return tuple("moe" if self.is_moe_layer(i) else "dense" for i in range(self.num_hidden_layers))

    def _type_problems(self) -> list[str]:
        """Fields of the wrong type (checked first: the range checks below compare numbers)."""
        problems = []
        for f in _INT_FIELDS:
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int):
                problems.append(f"{f}={v!r} must be an integer, got {type(v).__name__}")
        for f in _FLOAT_FIELDS:
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                problems.append(f"{f}={v!r} must be a finite number, got {type(v).__name__}")
        for f in ("tie_word_embeddings", "norm_topk_prob"):
            if not isinstance(getattr(self, f), bool):
                problems.append(f"{f}={getattr(self, f)!r} must be true or false")
        for f in ("bos_token_id", "eos_token_id"):
            v = getattr(self, f)
            ids = v if isinstance(v, tuple) else (v,)
            if v is not None and any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
                problems.append(f"{f}={v!r} must be a token id, a list of them, or null")
        if any(isinstance(i, bool) or not isinstance(i, int) for i in self.mlp_only_layers):
            problems.append(f"mlp_only_layers={list(self.mlp_only_layers)!r} must be a list of layer indices")
        if not isinstance(self.name, str):
            problems.append(f"name={self.name!r} must be a string")
        return problems

    def validate(self) -> None:
        """Raise ConfigError naming every inconsistent value."""
        problems = self._type_problems()
        if problems:
            raise ConfigError(f"invalid Qwen3 config {self.name if isinstance(self.name, str) else ''}: "
                              + "; ".join(problems))
        for f in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "max_position_embeddings"):
            v = getattr(self, f)
            if v <= 0:
                problems.append(f"{f}={v!r} must be a positive integer")
        if not problems and self.num_attention_heads % self.num_key_value_heads:
            problems.append(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim and self.head_dim % 2:
            problems.append(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.rms_norm_eps <= 0:
            problems.append(f"rms_norm_eps={self.rms_norm_eps} must be > 0")
        if self.rope_theta <= 0:
            problems.append(f"rope_theta={self.rope_theta} must be > 0")
        if self.num_experts < 0:
            problems.append(f"num_experts={self.num_experts} must be >= 0")
        if self.is_moe:
            if not 0 < self.num_experts_per_tok <= self.num_experts:
                problems.append(
                    f"num_experts_per_tok={self.num_experts_per_tok} must be in [1, num_experts="
                    f"{self.num_experts}]")
            if self.moe_intermediate_size <= 0:
                problems.append(f"moe_intermediate_size={self.moe_intermediate_size} must be > 0 for MoE")
            if self.decoder_sparse_step <= 0:
                problems.append(f"decoder_sparse_step={self.decoder_sparse_step} must be >= 1")
            bad = [i for i in self.mlp_only_layers if not 0 <= i < self.num_hidden_layers]
            if bad:
                problems.append(f"mlp_only_layers {bad} are outside [0, {self.num_hidden_layers})")
        if (not self.is_moe or "dense" in self._kinds_unchecked()) and self.intermediate_size <= 0:
            problems.append(f"intermediate_size={self.intermediate_size} must be > 0 (dense layers exist)")
        if problems:
            raise ConfigError(f"invalid Qwen3 config {self.name or ''}: " + "; ".join(problems))

    def _kinds_unchecked(self):
        step = max(self.decoder_sparse_step, 1)
        return {
            "moe" if (i not in self.mlp_only_layers and (i + 1) % step == 0) else "dense"
            for i in range(max(self.num_hidden_layers, 0))
        }

    def replace(self, **changes) -> "Qwen3Config":
        return dataclasses.replace(self, **changes)

    # ---- Hugging Face config.json --------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], name: str = "") -> "Qwen3Config":
        """Builds a config from a parsed `config.json` (transformers 4.51+ or 5.x names).

        Keys left out take transformers' defaults for the same key (`rope_theta` 10000,
        `norm_topk_prob` false, ...), so a file means here what it means there. This matters:
        `save_pretrained` writes only the keys that differ from transformers' defaults, so a
        missing `norm_topk_prob` means false. The dataclass defaults instead describe the released
        models (every released config.json spells these keys out), for building configs in code.
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
        missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
                   if k not in d]
        if missing:
            raise ConfigError(f"config.json lacks required keys {missing}")

        def number(key, default, kind=(int, float)):
            v = d.get(key, default)
            if v is None or isinstance(v, bool) or not isinstance(v, kind):
                raise ConfigError(f"config.json {key}={v!r} must be {'an integer' if kind is int else 'a number'}, "
                                  f"got {type(v).__name__}")
            return v

        for key, kind in (("rope_parameters", Mapping), ("rope_scaling", Mapping),
                          ("dual_chunk_attention_config", Mapping), ("mlp_only_layers", list)):
            if d.get(key) is not None and not isinstance(d[key], kind):
                raise ConfigError(f"config.json {key} must be {'an object' if kind is Mapping else 'a list'}, "
                                  f"got {d[key]!r:.60}")
        rope = d.get("rope_parameters") or {}
        rope_theta = d.get("rope_theta", rope.get("rope_theta", 10000.0))
        if isinstance(rope_theta, bool) or not isinstance(rope_theta, (int, float)):
            raise ConfigError(f"config.json rope_theta={rope_theta!r} must be a number")
        scaling = d.get("rope_scaling")
        if scaling is None and rope.get("rope_type", "default") not in ("default", None):
            scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        if scaling is not None:
            scaling = dict(scaling)
            rtype = scaling.get("rope_type", scaling.get("type", "default"))
            scaling = None if rtype == "default" else _rope_scaling_from_dict(scaling)

        key = "num_experts" if d.get("num_experts") is not None else "num_local_experts"
        num_experts = number(key, 0, int) if d.get(key) is not None else 0
        if mt == "qwen3":
            num_experts = 0
        elif num_experts <= 0:
            raise ConfigError("config.json model_type='qwen3_moe' but num_experts is missing or 0")
        heads = number("num_attention_heads", None, int)
        head_dim = d.get("head_dim") or number("hidden_size", None, int) // max(heads, 1)
        kw = dict(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d.get("intermediate_size", 0),
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads", heads),
            head_dim=head_dim,
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            rope_scaling=scaling,
            max_position_embeddings=d.get("max_position_embeddings", 40960),
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=tuple(d["eos_token_id"]) if isinstance(d.get("eos_token_id"), list) else d.get("eos_token_id"),
            name=name or d.get("_name_or_path", "") or "",
        )
        if d.get("dual_chunk_attention_config") is not None:
            kw["dual_chunk_attention_config"] = _dual_chunk_from_dict(dict(d["dual_chunk_attention_config"]))
        if num_experts:
            kw.update(
                num_experts=num_experts,
                num_experts_per_tok=d.get("num_experts_per_tok", 8),
                moe_intermediate_size=d.get("moe_intermediate_size", 0),
                norm_topk_prob=d.get("norm_topk_prob", False),
                decoder_sparse_step=d.get("decoder_sparse_step", 1),
                mlp_only_layers=tuple(d.get("mlp_only_layers") or ()),
                router_aux_loss_coef=d.get("router_aux_loss_coef", 0.001),
            )
        return cls(**kw)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "Qwen3Config":
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
            return cls.from_hf_dict(d, name=os.path.basename(os.path.dirname(os.path.abspath(path))))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def to_hf_dict(self) -> dict[str, Any]:
        """A `config.json` that transformers 4.51+ and 5.x both read.

        It writes the 4.51 names (`rope_theta`, `rope_scaling`, `num_experts`), which 5.x still accepts,
        and adds the 5.x `rope_parameters` so newer readers need no conversion.
        """
        d: dict[str, Any] = {
            "architectures": ["Qwen3MoeForCausalLM" if self.is_moe else "Qwen3ForCausalLM"],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling.to_dict() if self.rope_scaling else None,
            "max_position_embeddings": self.max_position_embeddings,
            "max_window_layers": self.num_hidden_layers,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "use_sliding_window": False,
            "sliding_window": None,
            "initializer_range": 0.02,
            "use_cache": True,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
            "torch_dtype": "bfloat16",
        }
        if self.dual_chunk_attention_config is not None:
            d["dual_chunk_attention_config"] = self.dual_chunk_attention_config.to_dict()
        rp = {"rope_theta": self.rope_theta, "rope_type": "default"}
        if self.rope_scaling:
            rp.update(self.rope_scaling.to_dict())
        d["rope_parameters"] = rp
        if self.is_moe:
            d.update(
                num_experts=self.num_experts,
                num_experts_per_tok=self.num_experts_per_tok,
                moe_intermediate_size=self.moe_intermediate_size,
                norm_topk_prob=self.norm_topk_prob,
                decoder_sparse_step=self.decoder_sparse_step,
                mlp_only_layers=list(self.mlp_only_layers),
                router_aux_loss_coef=self.router_aux_loss_coef,
                output_router_logits=False,
            )
        return d

    # ---- our own (YAML) form -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Field -> value, plain Python types; the inverse of `Qwen3Config(**d)`."""
        d = dataclasses.asdict(self)
        d["mlp_only_layers"] = list(self.mlp_only_layers)
        if isinstance(self.eos_token_id, tuple):
            d["eos_token_id"] = list(self.eos_token_id)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Qwen3Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown Qwen3Config keys {unknown}")
        return cls(**dict(d))


def _dual_chunk_from_dict(d: dict[str, Any]) -> DualChunkAttention:
    missing = [k for k in ("chunk_size", "local_size") if d.get(k) is None]
    if missing:
        raise ConfigError(f"dual_chunk_attention_config lacks {missing}")
    vals = {}
    for k in ("chunk_size", "local_size", "original_max_position_embeddings"):
        v = d.get(k) or 0
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"dual_chunk_attention_config {k}={d.get(k)!r} must be an integer >= 0")
        vals[k] = v
    if vals["chunk_size"] <= vals["local_size"]:
        raise ConfigError(f"dual_chunk_attention_config chunk_size={vals['chunk_size']} must be larger than "
                          f"local_size={vals['local_size']}")
    return DualChunkAttention(**vals)


def _rope_scaling_from_dict(d: dict[str, Any]) -> RopeScaling:
    rtype = d.get("rope_type", d.get("type"))
    if rtype not in ("yarn", "linear"):
        raise ConfigError(f"rope_scaling type {rtype!r} is not supported (yarn, linear)")
    if "factor" not in d or d["factor"] is None or float(d["factor"]) < 1.0:
        raise ConfigError(f"rope_scaling factor={d.get('factor')!r} must be a number >= 1")
    return RopeScaling(
        rope_type=rtype,
        factor=float(d["factor"]),
        original_max_position_embeddings=d.get("original_max_position_embeddings"),
        beta_fast=float(d.get("beta_fast") or 32.0),
        beta_slow=float(d.get("beta_slow") or 1.0),
        attention_factor=d.get("attention_factor"),
    )


@dataclasses.dataclass(frozen=True)
class Segment:
    """A run of consecutive layers of one kind, stacked and scanned as one unit.

    Attributes:
      name: param-tree key of the run ("layers" when the whole model is one run).
      kind: "dense" or "moe".
      start: index of the first layer of the run.
      length: number of layers.
    """

    name: str
    kind: str
    start: int
    length: int


_INT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "max_position_embeddings", "num_experts", "num_experts_per_tok",
               "moe_intermediate_size", "decoder_sparse_step")
_FLOAT_FIELDS = ("rms_norm_eps", "rope_theta", "router_aux_loss_coef")


def layer_segments(cfg: Qwen3Config) -> tuple[Segment, ...]:
    """Splits the layers into maximal runs of one kind.

    Every released Qwen3 model is a single run (all dense or all MoE), stored under "layers" with
    params shaped [L, ...]. A config mixing kinds (decoder_sparse_step > 1, mlp_only_layers) gets
    one scanned stack per run, named "layers_0", "layers_1", ... in order.
    """
    runs: list[list] = []
    for i, kind in enumerate(cfg.layer_kinds):
        if runs and runs[-1][0] == kind:
            runs[-1][2] += 1
        else:
            runs.append([kind, i, 1])
    if len(runs) == 1:
        return (Segment("layers", runs[0][0], 0, runs[0][2]),)
    return tuple(Segment(f"layers_{j}", kind, start, n) for j, (kind, start, n) in enumerate(runs))
