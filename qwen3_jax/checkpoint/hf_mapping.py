"""The one table between Hugging Face tensor names and our parameter paths.

Each `Rule` names a HF tensor (a template with `{layer}` and `{expert}`), where it lives in our
param tree (relative to its scope), and the transform between the two layouts. The scope says how
often it occurs: once ("global"), once per untied model ("head"), per layer ("layer"), per dense
layer ("dense"), per MoE layer ("moe"), or per expert of each MoE layer ("expert"). Layers are
stacked on the first axis of their segment's arrays, experts on the next.

Everything else (loading, the converter, export) walks `hf_tensors(cfg)`, so the table is the only
place that knows checkpoint names.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from qwen3_jax.config import Qwen3Config, layer_segments


@dataclasses.dataclass(frozen=True)
class Rule:
    """One HF tensor name template and how to turn it into (part of) one of our params.

    Attributes:
      hf: name template, e.g. "model.layers.{layer}.self_attn.q_proj.weight".
      path: our param path inside the scope, e.g. ("self_attn", "q_proj", "kernel").
      scope: "global", "head", "layer", "dense", "moe" or "expert".
      shape: the HF tensor's shape as symbols of the config sizes (see `SIZES`), e.g. ("NH", "D").
      transform: "identity"; "linear" (torch [out, in] -> [in, out]); "heads_in:<cfg field>"
        ([heads*H, D] -> [D, heads, H]); "heads_out" ([D, N*H] -> [N, H, D]).
    """

    hf: str
    path: tuple[str, ...]
    scope: str
    shape: tuple[str, ...]
    transform: str = "identity"


# Size symbols of `Rule.shape`: V vocab, D hidden, H head dim, NH = N*H, KH = K*H, E experts,
# F dense MLP width, Fe expert MLP width.
SIZES = {
    "V": lambda c: c.vocab_size, "D": lambda c: c.hidden_size, "H": lambda c: c.head_dim,
    "NH": lambda c: c.num_attention_heads * c.head_dim, "KH": lambda c: c.num_key_value_heads * c.head_dim,
    "E": lambda c: c.num_experts, "F": lambda c: c.intermediate_size, "Fe": lambda c: c.moe_intermediate_size,
}

# Tensors a HF checkpoint may hold that carry no parameter of ours: RoPE frequencies that older
# transformers versions saved (recomputed here from the config).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


_ATTN = "model.layers.{layer}.self_attn."
_MLP = "model.layers.{layer}.mlp."
TABLE: tuple[Rule, ...] = (
    Rule("model.embed_tokens.weight", ("embed_tokens", "embedding"), "global", ("V", "D")),
    Rule("model.norm.weight", ("norm", "scale"), "global", ("D",)),
    Rule("lm_head.weight", ("lm_head", "kernel"), "head", ("V", "D"), "linear"),
    Rule("model.layers.{layer}.input_layernorm.weight", ("input_layernorm", "scale"), "layer", ("D",)),
    Rule("model.layers.{layer}.post_attention_layernorm.weight", ("post_attention_layernorm", "scale"), "layer",
         ("D",)),
    Rule(_ATTN + "q_proj.weight", ("self_attn", "q_proj", "kernel"), "layer", ("NH", "D"),
         "heads_in:num_attention_heads"),
    Rule(_ATTN + "k_proj.weight", ("self_attn", "k_proj", "kernel"), "layer", ("KH", "D"),
         "heads_in:num_key_value_heads"),
    Rule(_ATTN + "v_proj.weight", ("self_attn", "v_proj", "kernel"), "layer", ("KH", "D"),
         "heads_in:num_key_value_heads"),
    Rule(_ATTN + "o_proj.weight", ("self_attn", "o_proj", "kernel"), "layer", ("D", "NH"), "heads_out"),
    Rule(_ATTN + "q_norm.weight", ("self_attn", "q_norm", "scale"), "layer", ("H",)),
    Rule(_ATTN + "k_norm.weight", ("self_attn", "k_norm", "scale"), "layer", ("H",)),
    Rule(_MLP + "gate_proj.weight", ("mlp", "gate_proj", "kernel"), "dense", ("F", "D"), "linear"),
    Rule(_MLP + "up_proj.weight", ("mlp", "up_proj", "kernel"), "dense", ("F", "D"), "linear"),
    Rule(_MLP + "down_proj.weight", ("mlp", "down_proj", "kernel"), "dense", ("D", "F"), "linear"),
    Rule(_MLP + "gate.weight", ("mlp", "gate", "kernel"), "moe", ("E", "D"), "linear"),
    Rule(_MLP + "experts.{expert}.gate_proj.weight", ("mlp", "experts", "gate_proj"), "expert", ("Fe", "D"),
         "linear"),
    Rule(_MLP + "experts.{expert}.up_proj.weight", ("mlp", "experts", "up_proj"), "expert", ("Fe", "D"),
         "linear"),
    Rule(_MLP + "experts.{expert}.down_proj.weight", ("mlp", "experts", "down_proj"), "expert", ("D", "Fe"),
         "linear"),
)


@dataclasses.dataclass(frozen=True)
class Target:
    """Where one HF tensor goes.

    Attributes:
      hf_name: the checkpoint name.
      path: full param path, e.g. ("layers", "self_attn", "q_proj", "kernel").
      index: position inside the stacked param: () for globals, (layer,) or (layer, expert).
      rule: the table row.
      hf_shape: the shape the checkpoint must hold.
    """

    hf_name: str
    path: tuple[str, ...]
    index: tuple[int, ...]
    rule: Rule
    hf_shape: tuple[int, ...]


def _our_shape(rule: Rule, hf_shape: tuple[int, ...], cfg: Qwen3Config) -> tuple[int, ...]:
    t = rule.transform
    if t == "identity":
        return hf_shape
    if t == "linear":
        return hf_shape[::-1]
    if t.startswith("heads_in:"):
        heads = getattr(cfg, t.split(":")[1])
        return (hf_shape[1], heads, hf_shape[0] // heads)
    if t == "heads_out":
        N = cfg.num_attention_heads
        return (N, hf_shape[1] // N, hf_shape[0])
    raise ValueError(f"unknown transform {t!r}")


def _hf_shape(rule: Rule, cfg: Qwen3Config) -> tuple[int, ...]:
    return tuple(SIZES[sym](cfg) for sym in rule.shape)


def is_ignored(name: str, cfg: Qwen3Config) -> bool:
    """Whether a checkpoint tensor that is not in `hf_tensors(cfg)` may be skipped.

    True for `IGNORED_SUFFIXES`, and for a stored LM head of a tied model (the head is the
    embedding; transformers ignores such a copy too).
    """
    head = next(r.hf for r in TABLE if r.scope == "head")
    return name.endswith(IGNORED_SUFFIXES) or (name == head and cfg.tie_word_embeddings)


def hf_tensors(cfg: Qwen3Config) -> Iterator[Target]:
    """Every tensor a HF checkpoint of `cfg` holds, in a stable order (lm_head only when untied)."""
    for rule in TABLE:
        if rule.scope == "global" or (rule.scope == "head" and not cfg.tie_word_embeddings):
            yield Target(rule.hf, rule.path, (), rule, _hf_shape(rule, cfg))
    for seg in layer_segments(cfg):
        for rule in TABLE:
            if rule.scope not in ("layer", seg.kind) and not (rule.scope == "expert" and seg.kind == "moe"):
                continue
            for j in range(seg.length):
                layer = seg.start + j
                if rule.scope == "expert":
                    for e in range(cfg.num_experts):
                        yield Target(rule.hf.format(layer=layer, expert=e), (seg.name,) + rule.path, (j, e),
                                     rule, _hf_shape(rule, cfg))
                else:
                    yield Target(rule.hf.format(layer=layer), (seg.name,) + rule.path, (j,), rule,
                                 _hf_shape(rule, cfg))


def param_shapes(cfg: Qwen3Config) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Full stacked shape of every param path, derived from the table."""
    seg_len = {s.name: s.length for s in layer_segments(cfg)}
    shapes = {}
    for t in hf_tensors(cfg):
        if t.path in shapes:
            continue
        inner = _our_shape(t.rule, t.hf_shape, cfg)
        stack = ()
        if t.index:
            stack = (seg_len[t.path[0]],) + ((cfg.num_experts,) if len(t.index) == 2 else ())
        shapes[t.path] = stack + inner
    return shapes


def to_ours(rule: Rule, x: np.ndarray, cfg: Qwen3Config) -> np.ndarray:
    """HF layout -> our layout for one tensor."""
    t = rule.transform
    if t == "identity":
        return x
    if t == "linear":
        return x.T
    if t.startswith("heads_in:"):
        heads = getattr(cfg, t.split(":")[1])
        return x.T.reshape(x.shape[1], heads, x.shape[0] // heads)
    if t == "heads_out":
        N = cfg.num_attention_heads
        return x.T.reshape(N, x.shape[1] // N, x.shape[0])
    raise ValueError(f"unknown transform {t!r}")


def to_hf(rule: Rule, y: np.ndarray, cfg: Qwen3Config) -> np.ndarray:
    """Our layout -> HF layout for one tensor (the inverse of `to_ours`)."""
    t = rule.transform
    if t == "identity":
        return y
    if t == "linear":
        return y.T
    if t.startswith("heads_in:"):
        return y.reshape(y.shape[0], -1).T
    if t == "heads_out":
        return y.reshape(-1, y.shape[-1]).T
    raise ValueError(f"unknown transform {t!r}")
