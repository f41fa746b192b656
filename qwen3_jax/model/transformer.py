"""The Qwen3 causal LM: embed -> scanned decoder layers -> final RMSNorm -> LM head.

Parameter tree (Linen names mirror the Hugging Face checkpoint; L = layers of the run):

    embed_tokens/embedding                 [V, D]
    layers/input_layernorm/scale           [L, D]
    layers/self_attn/{q_proj,k_proj,v_proj}/kernel   [L, D, N|K, H]
    layers/self_attn/o_proj/kernel         [L, N, H, D]
    layers/self_attn/{q_norm,k_norm}/scale [L, H]
    layers/post_attention_layernorm/scale  [L, D]
    layers/mlp/{gate_proj,up_proj}/kernel  [L, D, F]      (dense layers)
    layers/mlp/down_proj/kernel            [L, F, D]
    layers/mlp/gate/kernel                 [L, D, E]      (MoE layers: router)
    layers/mlp/experts/{gate_proj,up_proj} [L, E, D, F]
    layers/mlp/experts/down_proj           [L, E, F, D]
    norm/scale                             [D]
    lm_head/kernel                         [D, V]         (untied models only)

Configs that mix dense and MoE layers get one such stack per run of equal layers
("layers_0", "layers_1", ...; see `config.layer_segments`). With `unrolled=True` each stack holds
one tree per layer instead, without the leading [L] axis ("layers/0/...", "layers/1/...").
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qwen3_jax.config import Qwen3Config, layer_segments
from qwen3_jax.model import dual_chunk
from qwen3_jax.model import attention_impl as attn_impl
from qwen3_jax.model.block import DecoderLayer
from qwen3_jax.model.layers import Einsum, Embed, RMSNorm
from qwen3_jax.model.rope import rope_cos_sin, rope_frequencies
from qwen3_jax.ops.attention import causal_mask
from qwen3_jax.ops.ring_attention import zigzag_order
from qwen3_jax.sharding.rules import mesh_axis_sizes

ATTENTION_IMPLS = attn_impl.IMPLS
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_layer_inputs": jax.checkpoint_policies.save_only_these_names("decoder_layer_input"),
}


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Output:
    """What a forward pass returns.

    Attributes:
      logits: [B, T, V] in the compute dtype.
      cache: updated KV cache ({segment: {"k": [L, B, K, S, H], "v": [L, B, K, H, S]}}) or None.
      router_logits: [L_moe, B, T, E] router logits of every MoE layer in order, or None.
      hidden_states: when asked for, L + 1 arrays [B, T, D] as the reference returns them: the
        embeddings, the output of layers 0..L-2, then the final-normed output of the last layer.
      final_hidden: [B, T, D] final-normed hidden states, only when called with
        `compute_logits=False` (then `logits` is None): a loss that applies the LM head itself,
        chunk by chunk, never holds the [B, T, V] logits (`train/loss.py`).
    """

    logits: jax.Array | None
    cache: Any = None
    router_logits: jax.Array | None = None
    hidden_states: tuple | None = None
    final_hidden: jax.Array | None = None


class Qwen3(nn.Module):
    """Qwen3 causal language model (dense or MoE).

    Attributes:
      config: architecture.
      dtype: compute dtype (activations, matmul inputs).
      param_dtype: storage dtype of parameters.
      remat: rematerialisation policy of each layer, a key of REMAT_POLICIES.
      moe_impl: expert computation ("auto" picks per backend; see `ops.moe`).
      moe_capacity_factor: capacity of expert-parallel MoE layers (None = dropless; see `model.moe`).
      attention_impl: "xla" (plain attention over a [B, T, S] mask), "flash" (the Pallas kernels;
        see `model.attention_impl`), "ring" (ring attention over the mesh's `sequence` axis for
        calls without a cache, `ops.ring_attention`; cached calls use "xla") or "auto" (ring when
        the mesh has sequence > 1, else flash on TPU/GPU, else xla).
      ring_layout: order of the tokens along the sequence with "ring": "contiguous", or "zigzag"
        when the caller has put ids, segment ids, masks (and positions, if given) in the zig-zag
        order of `ops.ring_attention.to_zigzag` (default positions are then permuted here).
      attention_platform: platform the attention kernels are chosen for ("" = decided at trace time
        from the default backend; `qwen3_jax.load` sets it from the mesh's devices).
      unrolled: False: each stack of layers is one `nn.scan` over params stacked [L, ...] (and a
        cache {"k": [L, ...], "v": [L, ...]}). True: one module, param tree and cache entry per
        layer (params "layers/0/...", cache {"layers": ({"k", "v"}, ...)}), the loop unrolled at
        trace time; the generation engine's CPU decode layout (`generate.forward.Split`).
    """

    config: Qwen3Config
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: str = "none"
    moe_impl: str = "auto"
    moe_capacity_factor: float | None = None
    attention_impl: str = "xla"
    ring_layout: str = "contiguous"
    attention_platform: str = ""
    unrolled: bool = False

    def attention_choice(self) -> tuple[str, str]:
        """(impl, platform) this module runs, "auto" and an empty platform resolved."""
        impl, platform = attn_impl.resolve(self.attention_impl,
                                           dual_chunk=self.config.dual_chunk_attention_config is not None)
        return impl, self.attention_platform or platform

    @nn.compact
    def __call__(self, input_ids, positions=None, attention_mask=None, cache=None, write_at=None,
                 segment_ids=None, return_hidden: bool = False, logits_at=None,
                 compute_logits: bool = True) -> Output:
        """Args:
          input_ids: [B, T] int token ids.
          positions: [B, T] RoPE positions; default 0..T-1 (or write_at + 0..T-1 with a cache).
          attention_mask: without a cache, [B, T] with 1 for real tokens and 0 for padding; with a
            cache, [B, S] marking the valid cache slots after this call's tokens are written.
          cache: KV cache from `init_cache`; the call's keys/values are written at `write_at`.
          write_at: [B] int, first cache slot of this call's tokens (required with a cache).
          segment_ids: [B, T] packing ids (no cache): tokens only attend within their segment.
          return_hidden: also return every layer's hidden states.
          logits_at: optional [B] int; compute logits only at position logits_at[b] of each row
            (logits come back [B, 1, V]): a prefill needs one row, not the [B, T, V] LM head.
          compute_logits: False skips the LM head and returns the final-normed hidden states in
            `Output.final_hidden` instead (the head's params must then exist already: apply only).
        """
        c = self.config
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"unknown remat policy {self.remat!r}; expected one of {list(REMAT_POLICIES)}")
        impl, platform = self.attention_choice()
        cos, sin, mask = attention_inputs(c, input_ids.shape, self.dtype, positions, attention_mask, cache is not None,
                                          write_at, segment_ids, impl, self.ring_layout)
        embed = Embed(c.vocab_size, c.hidden_size, self.dtype, self.param_dtype, name="embed_tokens")
        x = nn.with_logical_constraint(embed(input_ids), ("batch", "length", "act_embed"))

        hidden = [x] if return_hidden else None
        router_logits, new_cache = [], {} if cache is not None else None
        for seg in layer_segments(c):
            layer_cls = DecoderLayer
            if self.remat != "none":
                layer_cls = nn.remat(DecoderLayer, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
            args = (c, seg.kind, self.dtype, self.param_dtype, self.moe_impl, return_hidden)
            kwargs = dict(moe_capacity_factor=self.moe_capacity_factor, attention_impl=impl,
                          ring_layout=self.ring_layout, attention_platform=platform)
            if self.unrolled:
                stack = UnrolledLayers(functools.partial(layer_cls, *args, **kwargs), seg.length, name=seg.name)
            else:
                stack = nn.scan(
                    layer_cls,
                    variable_axes={"params": 0, "intermediates": 0},  # per-layer sown MoE drop counts
                    split_rngs={"params": True},
                    in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                    length=seg.length,
                    metadata_params={nn.PARTITION_NAME: "layers"},
                )(*args, **kwargs, name=seg.name)
            seg_cache = None if cache is None else cache[seg.name]
            x, (seg_cache, seg_router, seg_hidden) = stack(x, seg_cache, cos, sin, mask, write_at)
            if cache is not None:
                new_cache[seg.name] = seg_cache
            if seg_router is not None:
                router_logits.append(seg_router)
            if return_hidden:
                hidden.extend(seg_hidden[i] for i in range(seg.length))

        x = RMSNorm(c.rms_norm_eps, "norm", self.param_dtype, name="norm")(x)
        if not compute_logits:
            return Output(logits=None, router_logits=jnp.concatenate(router_logits, axis=0) if router_logits else None,
                          final_hidden=x)
        h = x if logits_at is None else jnp.take_along_axis(x, logits_at.astype(jnp.int32)[:, None, None], axis=1)
        if c.tie_word_embeddings:
            logits = embed.attend(h)
        else:
            logits = Einsum((c.hidden_size, c.vocab_size), ("embed", "vocab"), "BTD,DV->BTV",
                            dtype=self.dtype, param_dtype=self.param_dtype, name="lm_head")(h)
        logits = nn.with_logical_constraint(logits, ("batch", "length", "act_vocab"))
        if return_hidden:
            hidden[-1] = x  # the reference reports the last layer's output after the final norm
            hidden = tuple(hidden)
        return Output(
            logits=logits,
            cache=new_cache,
            router_logits=jnp.concatenate(router_logits, axis=0) if router_logits else None,
            hidden_states=hidden,
        )


class UnrolledLayers(nn.Module):
    """`length` layers applied in turn, each its own submodule ("0", "1", ...): `nn.scan` unrolled.

    Takes and returns what the scanned stack does, except that the cache is a tuple of per-layer
    caches ({"k": [B, K, S, H], "v": [B, K, H, S]} each) instead of arrays with a leading [L] axis.

    Attributes:
      layer: builds one layer given its name (a `DecoderLayer` with its arguments bound).
      length: number of layers.
    """

    layer: Callable[..., nn.Module]
    length: int

    @nn.compact
    def __call__(self, x, cache, cos, sin, mask, write_at):
        caches, routers, hidden = [], [], []
        for i in range(self.length):
            x, (layer_cache, router, h) = self.layer(name=str(i))(x, None if cache is None else cache[i], cos, sin,
                                                                   mask, write_at)
            caches.append(layer_cache)
            routers.append(router)
            hidden.append(h)
        return x, (None if cache is None else tuple(caches),
                   None if routers[0] is None else jnp.stack(routers),
                   None if hidden[0] is None else jnp.stack(hidden))


def attention_inputs(config: Qwen3Config, shape: tuple[int, int], dtype, positions=None, attention_mask=None,
                     cached: bool = False, write_at=None, segment_ids=None, attention_impl: str = "xla",
                     ring_layout: str = "contiguous"):
    """RoPE tables and the attention mask shared by every layer of one call.

    Args:
      config: the model config (RoPE settings).
      shape: (B, T) of the call's token ids.
      dtype: compute dtype of cos/sin.
      positions, attention_mask, write_at, segment_ids: as in `Qwen3.__call__`.
      cached: whether the call reads and writes a KV cache.
      attention_impl, ring_layout: as in `Qwen3` (resolved); with "flash" the mask comes as its
        parts (`model.attention_impl.mask_parts`), never materialised.

    Returns:
      cos, sin [B, T, H] and the boolean mask [B, T, S]; with dual chunk attention, cos and sin
      [3, B, T, H] and a dict of layer inputs instead of the mask (see `model.dual_chunk`); with
      ring attention (no cache), {"segment_ids": [B, T]} instead of the mask (padding: 0, or -1
      with segment ids), so that no [B, T, T] array exists.
    """
    B, T = shape
    steps = jnp.arange(T, dtype=jnp.int32)[None, :]
    if not cached:
        q_slots = jnp.broadcast_to(steps, (B, T))
        kv_valid = jnp.ones((B, T), bool) if attention_mask is None else attention_mask.astype(bool)
    else:
        if write_at is None or attention_mask is None:
            raise ValueError("a cached call needs write_at [B] and attention_mask [B, S] (valid cache slots)")
        q_slots = write_at.astype(jnp.int32)[:, None] + steps
        kv_valid = attention_mask.astype(bool)
    if config.dual_chunk_attention_config is not None:
        return dual_chunk.attention_inputs(config, q_slots, kv_valid, positions, segment_ids, dtype, cached)
    ring = attention_impl == "ring" and not cached
    if ring and positions is None and ring_layout == "zigzag":
        n = mesh_axis_sizes().get("sequence", 1)
        positions = jnp.broadcast_to(jnp.asarray(zigzag_order(T, n), jnp.int32), (B, T))
    positions = q_slots if positions is None else positions
    inv_freq, att_factor = rope_frequencies(config)
    cos, sin = rope_cos_sin(positions, inv_freq, att_factor, dtype)
    if ring:
        seg = kv_valid.astype(jnp.int32) if segment_ids is None else jnp.where(kv_valid, segment_ids, -1)
        return cos, sin, {"segment_ids": seg.astype(jnp.int32)}
    if attention_impl == "flash":
        plain = not cached and attention_mask is None
        return cos, sin, attn_impl.mask_parts(q_slots, None if plain else kv_valid, segment_ids)
    return cos, sin, causal_mask(q_slots, kv_valid, segment_ids)


def init_cache(config: Qwen3Config, batch: int, length: int, dtype=jnp.bfloat16, unrolled: bool = False) -> dict:
    """An empty KV cache (see `update_cache`).

    {segment: {"k": [L_seg, B, K, S, H], "v": [L_seg, B, K, H, S]}}, or with `unrolled` (for
    `Qwen3(unrolled=True)`) {segment: ({"k": [B, K, S, H], "v": [B, K, H, S]}, ...)}, one per layer.
    """
    K, H = config.num_key_value_heads, config.head_dim

    def zeros(*lead):
        return {"k": jnp.zeros((*lead, batch, K, length, H), dtype), "v": jnp.zeros((*lead, batch, K, H, length), dtype)}

    return {seg.name: tuple(zeros() for _ in range(seg.length)) if unrolled else zeros(seg.length)
            for seg in layer_segments(config)}


# NumPy, not jnp: creating a JAX array at import would start the backends (and fix the device count).
DUMMY_IDS = np.zeros((1, 1), np.int32)


def abstract_variables(config: Qwen3Config, param_dtype=jnp.float32):
    """Boxed abstract params (ShapeDtypeStructs inside LogicallyPartitioned) from `jax.eval_shape`.

    Nothing is allocated; the boxes carry each param's logical axis names.
    """
    model = Qwen3(config, param_dtype=param_dtype, dtype=param_dtype)
    return jax.eval_shape(model.init, jax.random.key(0), DUMMY_IDS)["params"]
