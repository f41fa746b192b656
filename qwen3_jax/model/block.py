"""One pre-norm decoder layer: x + Attn(RMSNorm(x)), then x + MLP-or-MoE(RMSNorm(x)).

Its call signature is the one `nn.scan` needs, (carry, scanned input, broadcast args...) ->
(carry, per-layer outputs), so a stack of layers is this module scanned over a `layers` axis.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from qwen3_jax.config import Qwen3Config
from qwen3_jax.model.attention import Attention
from qwen3_jax.model.layers import RMSNorm
from qwen3_jax.model.mlp import MLP
from qwen3_jax.model.moe import MoE


class DecoderLayer(nn.Module):
    """A Qwen3 decoder layer.

    Attributes:
      cfg: model config.
      kind: "dense" (SwiGLU MLP) or "moe" (sparse MoE block).
      dtype, param_dtype: compute and storage dtypes.
      moe_impl: expert computation for MoE layers (see `ops.moe.IMPLS`).
      moe_capacity_factor: expert-parallel capacity of MoE layers (None = dropless; see `model.moe`).
      return_hidden: also output this layer's output hidden state.
      attention_impl, ring_layout, attention_platform: see `Qwen3`.
    """

    cfg: Qwen3Config
    kind: str = "dense"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    moe_impl: str = "auto"
    return_hidden: bool = False
    moe_capacity_factor: float | None = None
    attention_impl: str = "xla"
    ring_layout: str = "contiguous"
    attention_platform: str = ""

    @nn.compact
    def __call__(self, x, cache, cos, sin, mask, write_at):
        """Args:
          x: [B, T, D] residual stream (the scan carry).
          cache: this layer's {"k": [B, K, S, H], "v": [B, K, H, S]} or None (scanned over layers).
          cos, sin, mask, write_at: shared by all layers (see `Attention`).

        Returns:
          (x [B, T, D], (cache, router logits [B, T, E] or None, x or None)).
        """
        c = self.cfg
        x = checkpoint_name(x, "decoder_layer_input")
        h = RMSNorm(c.rms_norm_eps, "norm", self.param_dtype, name="input_layernorm")(x)
        a, cache = Attention(c, self.dtype, self.param_dtype, self.attention_impl, self.ring_layout,
                             self.attention_platform, name="self_attn")(h, cos, sin, mask, cache, write_at)
        x = x + a
        h = RMSNorm(c.rms_norm_eps, "norm", self.param_dtype, name="post_attention_layernorm")(x)
        router_logits = None
        if self.kind == "moe":
            m, router_logits = MoE(c, self.dtype, self.param_dtype, self.moe_impl,
                                   capacity_factor=self.moe_capacity_factor, name="mlp")(h)
        else:
            m = MLP(c.hidden_size, c.intermediate_size, self.dtype, self.param_dtype, name="mlp")(h)
        x = nn.with_logical_constraint(x + m, ("batch", "length", "act_embed"))
        return x, (cache, router_logits, x if self.return_hidden else None)
