"""Model FLOPs of one step, counted from the architecture (XLA's cost analysis counts a scanned
layer stack once, so it cannot be used for this).

Matmul FLOPs are 2 per multiply-add. Per token, the forward pass costs 2 × (the weights it
multiplies by: every projection, the router, the `num_experts_per_tok` experts it is routed to, and
the LM head; not the embedding lookup) plus attention: 2 × 2 × heads × head_dim per (query, visible
key) pair, for QKᵀ and PV. Causal attention over T tokens sees T(T+1)/2 pairs. Training is 3× the
forward (forward, then gradients with respect to activations and to weights), the convention of
MFU figures (PaLM, arXiv 2204.02311, appendix B); rematerialisation is not counted as model FLOPs.
"""

from __future__ import annotations

from qwen3_jax.config import Qwen3Config


def matmul_params_per_token(cfg: Qwen3Config) -> int:
    """Weights one token is multiplied by in a forward pass (active experts only, LM head included)."""
    D, N, K, H = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    attn = D * N * H * 2 + D * K * H * 2  # q, o and k, v
    total = 0
    for kind in cfg.layer_kinds:
        total += attn
        if kind == "moe":
            total += D * cfg.num_experts + 3 * D * cfg.moe_intermediate_size * cfg.num_experts_per_tok
        else:
            total += 3 * D * cfg.intermediate_size
    return total + D * cfg.vocab_size


def attention_pairs_causal(seq: int) -> int:
    return seq * (seq + 1) // 2


def forward_flops(cfg: Qwen3Config, batch: int, seq: int, context: int | None = None) -> float:
    """Forward FLOPs for `batch` rows of `seq` new tokens.

    Args:
      context: None for a causal pass over the `seq` tokens alone (training, prefill); otherwise every
        new token attends to `context` keys (a decode step over a cache of that many valid slots).
    """
    per_pair = 4 * cfg.num_attention_heads * cfg.head_dim * cfg.num_hidden_layers
    pairs = attention_pairs_causal(seq) if context is None else seq * context
    return float(batch) * (2.0 * matmul_params_per_token(cfg) * seq + per_pair * pairs)


def train_flops(cfg: Qwen3Config, batch: int, seq: int) -> float:
    """Model FLOPs of one training step (forward + backward) over `batch` × `seq` tokens."""
    return 3.0 * forward_flops(cfg, batch, seq)
