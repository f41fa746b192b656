"""Qwen3 attention: q/k/v projections, per-head q/k RMSNorm before RoPE, GQA, o projection.

Shapes use the repo's alphabet: B batch, T query length, S key length, D model, N query heads,
K KV heads, H head dim.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3_jax.config import Qwen3Config
from qwen3_jax.model.layers import Einsum, RMSNorm
from qwen3_jax.model.rope import apply_rope
from qwen3_jax.ops.attention import dot_product_attention


def update_cache(cache: dict[str, jax.Array], k: jax.Array, v: jax.Array, write_at: jax.Array):
    """Writes k, v [B, T, K, H] into cache["k"/"v"] [B, S, K, H] at slot write_at[b] of each row."""
    def put(buf, new, at):
        return jax.lax.dynamic_update_slice_in_dim(buf, new.astype(buf.dtype), at, axis=0)

    return {"k": jax.vmap(put)(cache["k"], k, write_at), "v": jax.vmap(put)(cache["v"], v, write_at)}


class Attention(nn.Module):
    """Grouped-query self-attention of one Qwen3 layer.

    Attributes:
      cfg: the model config (heads, head_dim, eps).
      dtype, param_dtype: compute and storage dtypes.
    """

    cfg: Qwen3Config
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cos, sin, mask, cache=None, write_at=None):
        """Args:
          x: [B, T, D] normalised hidden states.
          cos, sin: [B, T, H] rotary tables for the query positions.
          mask: [B, T, S] boolean attention mask (S = T without a cache, the cache length with one).
          cache: optional {"k", "v"} of [B, S, K, H]; the new keys/values are written at `write_at`.
          write_at: [B] int, first cache slot of this call's tokens in each row.

        Returns:
          (output [B, T, D], updated cache or None).
        """
        c = self.cfg
        D, N, K, H = c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        q = Einsum((D, N, H), ("embed", "heads", "head_dim"), "BTD,DNH->BTNH", name="q_proj", **kw)(x)
        k = Einsum((D, K, H), ("embed", "kv_heads", "head_dim"), "BTD,DKH->BTKH", name="k_proj", **kw)(x)
        v = Einsum((D, K, H), ("embed", "kv_heads", "head_dim"), "BTD,DKH->BTKH", name="v_proj", **kw)(x)
        # QK-norm over head_dim, one weight shared by all heads; it precedes RoPE so the rotation
        # acts on normalised vectors (the order the reference uses; swapping it changes the logits).
        q = RMSNorm(c.rms_norm_eps, "head_dim", self.param_dtype, name="q_norm")(q)
        k = RMSNorm(c.rms_norm_eps, "head_dim", self.param_dtype, name="k_norm")(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = nn.with_logical_constraint(q, ("batch", "length", "act_heads", "head_dim"))
        k = nn.with_logical_constraint(k, ("batch", "length", "act_kv_heads", "head_dim"))
        v = nn.with_logical_constraint(v, ("batch", "length", "act_kv_heads", "head_dim"))
        if cache is not None:
            cache = update_cache(cache, k, v, write_at)
            k, v = cache["k"], cache["v"]
        out = dot_product_attention(q, k.astype(self.dtype), v.astype(self.dtype), mask, H ** -0.5)
        out = nn.with_logical_constraint(out, ("batch", "length", "act_heads", "head_dim"))
        y = Einsum((N, H, D), ("heads", "head_dim", "embed"), "BTNH,NHD->BTD", name="o_proj", **kw)(out)
        return y, cache
