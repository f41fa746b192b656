"""The Qwen3 architecture config: one frozen dataclass for the dense and the MoE models.

`Qwen3Config` holds only architecture facts (what a checkpoint's `config.json` says). Runtime
choices (compute dtype, remat, MoE kernel) are arguments of the model, not config fields.

One set of defaults: the dataclass defaults are transformers' (`Qwen3Config` for the shared fields,
`Qwen3MoeConfig` for the MoE fields), and a key that a config.json leaves out takes the same
default here as there. Reading and writing `config.json` (both transformers generations) lives in
`config_hf.py`. The released models' values (rope_theta 1e6, context 40,960, ...) are spelled out
in `presets.py`, not taken from defaults.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping


class ConfigError(ValueError):
    """A config that is not a Qwen3 config, or whose values contradict each other."""


# Sizes, positions and token ids index int32 arrays (JAX's default integer type).
INT_LIMIT = 2**31


def check_number(block: str, key: str, v: Any, *, integer: bool = False, low: float = 0,
                 inclusive: bool = True) -> None:
    """Raises ConfigError naming `block key=v` unless v is a number (an int when `integer`, never a
    bool or a string) that is >= low (> low when not `inclusive`), finite, and below INT_LIMIT for
    integers."""
    kind = "an integer" if integer else "a finite number"
    bound = f"{'>=' if inclusive else '>'} {low:g}" + (" and < 2**31" if integer else "")
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise ConfigError(f"{block} {key}={v!r} must be {kind} {bound}, got {type(v).__name__}")
    if not math.isfinite(v) or not (v >= low if inclusive else v > low) or (integer and v >= INT_LIMIT):
        raise ConfigError(f"{block} {key}={v!r} must be {kind} {bound}")


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

    def __post_init__(self):
        if self.rope_type not in ("yarn", "linear"):
            raise ConfigError(f"rope_scaling type {self.rope_type!r} is not supported (yarn, linear)")
        check_number("rope_scaling", "factor", self.factor, low=1.0)
        if self.original_max_position_embeddings is not None:
            check_number("rope_scaling", "original_max_position_embeddings", self.original_max_position_embeddings,
                         integer=True, low=1)
        for key in ("beta_fast", "beta_slow") + (("attention_factor",) if self.attention_factor is not None else ()):
            check_number("rope_scaling", key, getattr(self, key), low=0.0, inclusive=False)
            object.__setattr__(self, key, float(getattr(self, key)))
        object.__setattr__(self, "factor", float(self.factor))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RopeScaling":
        """From the `rope_scaling` object of a config.json (`type` is read as `rope_type`); a null
        beta takes its default. Errors name the bad key."""
        def get(key, default):
            return default if d.get(key) is None else d[key]

        return cls(rope_type=d.get("rope_type", d.get("type")), factor=d.get("factor"),
                   original_max_position_embeddings=d.get("original_max_position_embeddings"),
                   beta_fast=get("beta_fast", 32.0), beta_slow=get("beta_slow", 1.0),
                   attention_factor=d.get("attention_factor"))


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

    def __post_init__(self):
        for k in ("chunk_size", "local_size", "original_max_position_embeddings"):
            check_number("dual_chunk_attention_config", k, getattr(self, k), integer=True, low=0)
        if self.chunk_size <= self.local_size:
            raise ConfigError(f"dual_chunk_attention_config chunk_size={self.chunk_size} must be larger than "
                              f"local_size={self.local_size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DualChunkAttention":
        """From the `dual_chunk_attention_config` object of a config.json; errors name the bad key."""
        missing = [k for k in ("chunk_size", "local_size") if d.get(k) is None]
        if missing:
            raise ConfigError(f"dual_chunk_attention_config lacks {missing}")
        omp = d.get("original_max_position_embeddings")
        return cls(chunk_size=d["chunk_size"], local_size=d["local_size"],
                   original_max_position_embeddings=0 if omp is None else omp)


@dataclasses.dataclass(frozen=True)
class Qwen3Config:
    """Architecture of a Qwen3 model (dense when `num_experts == 0`).

    The defaults are transformers' (see the module docstring), not a released model's: take a
    preset (`presets.get_preset`) for those.

    Attributes:
      vocab_size: rows of the embedding (151,936; the tokenizer uses 151,669 of them).
      hidden_size: model width D.
      intermediate_size: width F of the dense SwiGLU MLP (unused by all-MoE models).
      num_hidden_layers: L.
      num_attention_heads: query heads N.
      num_key_value_heads: KV heads K (GQA; N must be a multiple of K).
      head_dim: H, 128 for every released model; NOT hidden_size / heads.
      rms_norm_eps: epsilon of every RMSNorm, q/k norms included.
      rope_theta: RoPE base (1e6 in the released models, after ABF).
      rope_scaling: optional YaRN scaling (not used with dual chunk attention, as in vLLM).
      max_position_embeddings: context the config advertises (40,960 in the released models).
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
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10_000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    num_experts: int = 0
    num_experts_per_tok: int = 8
    moe_intermediate_size: int = 768
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    router_aux_loss_coef: float = 0.001
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
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
            object.__setattr__(self, "rope_scaling", RopeScaling.from_dict(dict(self.rope_scaling)))
        if isinstance(self.dual_chunk_attention_config, Mapping):
            object.__setattr__(self, "dual_chunk_attention_config",
                               DualChunkAttention.from_dict(dict(self.dual_chunk_attention_config)))
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
            elif abs(v) >= INT_LIMIT:
                problems.append(f"{f}={v!r} must be below 2**31")
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
            if v is not None and any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < INT_LIMIT
                                     for i in ids):
                problems.append(f"{f}={v!r} must be a token id, a list of them, or null")
        if any(isinstance(i, bool) or not isinstance(i, int) for i in self.mlp_only_layers):
            problems.append(f"mlp_only_layers={list(self.mlp_only_layers)!r} must be a list of layer indices")
        if not isinstance(self.name, str):
            problems.append(f"name={self.name!r} must be a string")
        for f, kind in (("rope_scaling", RopeScaling), ("dual_chunk_attention_config", DualChunkAttention)):
            if getattr(self, f) is not None and not isinstance(getattr(self, f), kind):
                problems.append(f"{f} must be an object, got {type(getattr(self, f)).__name__}")
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

    # ---- Hugging Face config.json (qwen3_jax.config_hf) -----------------------------------------
    # config_hf imports this module, hence the imports inside the methods.
    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], name: str = "") -> "Qwen3Config":
        """Builds a config from a parsed `config.json`; see `config_hf.from_hf_dict`."""
        from qwen3_jax import config_hf

        return config_hf.from_hf_dict(d, name, cls=cls)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "Qwen3Config":
        """Reads a `config.json` file; see `config_hf.from_json_file`."""
        from qwen3_jax import config_hf

        return config_hf.from_json_file(path, cls=cls)

    def to_hf_dict(self) -> dict[str, Any]:
        """A `config.json` that transformers 4.51+ and 5.x both read; see `config_hf.to_hf_dict`."""
        from qwen3_jax import config_hf

        return config_hf.to_hf_dict(self)

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
