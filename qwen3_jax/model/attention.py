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
from qwen3_jax.model import attention_impl as attn_impl
from qwen3_jax.model import dual_chunk
from qwen3_jax.model.layers import Einsum, RMSNorm
from qwen3_jax.model.rope import apply_rope
from qwen3_jax.ops.attention import dot_product_attention, prefix_attention
from qwen3_jax.ops.ring_attention import ring_attention


def update_cache(cache: dict[str, jax.Array], k: jax.Array, v: jax.Array, write_at: jax.Array):
    """Writes k, v [B, T, K, H] into the cache at slot write_at[b] of each row.

    The cache holds keys as [B, K, S, H] and values as [B, K, H, S]: with these layouts both
    attention products read the cache where it lies (keys contract H, values contract S, each
    along their minor axis, per KV head), where a [B, S, K, H] cache makes XLA:CPU copy a
    transposed cache for every layer at every decode step. Each row is one in-place slice update.
    """
    dtype = cache["k"].dtype
    kc, vc = cache["k"], cache["v"]
    k = k.astype(dtype).transpose(0, 2, 1, 3)  # [B, K, T, H]
    v = v.astype(dtype).transpose(0, 2, 3, 1)  # [B, K, H, T]
    zero = jnp.zeros((), jnp.int32)
    for b in range(k.shape[0]):  # one in-place slice update per row (B is static and small)
        at = write_at[b].astype(jnp.int32)
        kc = jax.lax.dynamic_update_slice(kc, k[b:b + 1], (b, zero, at, zero))
        vc = jax.lax.dynamic_update_slice(vc, v[b:b + 1], (b, zero, zero, at))
    return {"k": kc, "v": vc}


class Attention(nn.Module):
    """Grouped-query self-attention of one Qwen3 layer.

    Attributes:
      cfg: the model config (heads, head_dim, eps).
      dtype, param_dtype: compute and storage dtypes.
      attention_impl: "xla", "flash" or "ring" (resolved; see `model.attention_impl`); with "ring"
        (calls without a cache) `mask` is {"segment_ids"}.
      ring_layout: "contiguous" or "zigzag" token order along the sequence (see `Qwen3`).
      platform: "tpu", "gpu" or "cpu", the platform the kernels are chosen for ("" = the default backend).
    """

    cfg: Qwen3Config
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention_impl: str = "xla"
    ring_layout: str = "contiguous"
    platform: str = ""

    @nn.compact
    def __call__(self, x, cos, sin, mask, cache=None, write_at=None):
        """Args:
          x: [B, T, D] normalised hidden states.
          cos, sin: [B, T, H] rotary tables for the query positions.
          mask: [B, T, S] boolean attention mask (S = T without a cache, the cache length with one);
            with "flash" or "ring" its parts instead (`attention_impl.mask_parts`).
          cache: optional {"k": [B, K, S, H], "v": [B, K, H, S]}; the new keys/values are written at `write_at`.
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
        if c.dual_chunk_attention_config is not None:  # rotary tables and mask from `model.dual_chunk`
            out, cache = dual_chunk.attend(c, q, k, v, cos, sin, mask, cache, write_at, update_cache)
            return Einsum((N, H, D), ("heads", "head_dim", "embed"), "BTNH,NHD->BTD", name="o_proj", **kw)(out), cache
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = nn.with_logical_constraint(q, ("batch", "length", "act_heads", "head_dim"))
        k = nn.with_logical_constraint(k, ("batch", "length", "act_kv_heads", "head_dim"))
        v = nn.with_logical_constraint(v, ("batch", "length", "act_kv_heads", "head_dim"))
        scale = H ** -0.5
        if cache is None and self.attention_impl == "ring":
            out = ring_attention(q, k, v, mask["segment_ids"], scale=scale, layout=self.ring_layout)
        elif self.attention_impl == "flash":
            out, cache = attn_impl.attend(self.platform or jax.default_backend(), q, k, v, mask, cache, write_at,
                                          scale, update_cache)
        elif cache is None:
            out = dot_product_attention(q, k, v, mask, scale)
        elif q.shape[1] == 1:
            # Decode: attend over the cache as it was plus this step's own key and value, then write
            # them. Reading the updated cache instead makes XLA:CPU compute the slice update twice
            # (once for the attention, once for the new cache) and copy the whole cache four times.
            slot = jnp.arange(mask.shape[-1]) == write_at[:, None, None]  # [B, 1, S]
            out = dot_product_attention(q, cache["k"], cache["v"], mask & ~slot, scale, "cache",
                                        (k, v, jnp.any(mask & slot, axis=-1, keepdims=True)))
            # The write waits for the read: a zero that XLA cannot fold (x * 0 is NaN for NaN x) ties
            # the written values to the attention output, so the old cache is read before it is
            # overwritten in place. Without the dependency XLA copies each cache to be safe.
            dep = (out[:, :, :1, :1] * 0).astype(k.dtype)
            cache = update_cache(cache, k + dep, v + dep, write_at)
        elif q.shape[1] == cache["k"].shape[-2]:
            # The call fills the whole cache (the engine's prefill; the only slot it can start at is
            # 0): attend over k, v as computed, block-causally, instead of reading them back out of
            # the cache's layout.
            out = prefix_attention(q, k, v, mask, scale)
            cache = update_cache(cache, k, v, write_at)
        else:
            cache = update_cache(cache, k, v, write_at)
            out = dot_product_attention(q, cache["k"], cache["v"], mask, scale, "cache")
        out = nn.with_logical_constraint(out, ("batch", "length", "act_heads", "head_dim"))
        y = Einsum((N, H, D), ("heads", "head_dim", "embed"), "BTNH,NHD->BTD", name="o_proj", **kw)(out)
        return y, cache
