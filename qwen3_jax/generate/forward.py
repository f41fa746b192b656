"""The model forward pass as the decode loop calls it, in two parameter layouts.

`Stacked` calls the model as it is: layers scanned over params stacked [L, ...] and a cache
[L, B, S, K, H]. Inside a decode loop that costs memory traffic on XLA:CPU: every step slices each
layer's weights out of the stack (a copy written and read again before the matmul) and rebuilds
the stacked cache.

`Split` runs the same `DecoderLayer` modules over per-layer params (split once, when the engine
is built) and a per-layer cache ({segment: ({"k", "v": [B, S, K, H]}, ...)}), with the layer loop
unrolled at trace time, so each matmul reads its weights where they lie and each cache update is
in place. The price is a second copy of the layer weights held by the engine.

`Split` also computes each layer's output projection `o_proj` ("BTNH,NHD->BTD") as one 2-D matmul
over N*H (a reshape of the kernel, free in its row-major layout): given the two contracting axes,
XLA:CPU otherwise transposes the [N, H, D] kernel into a fresh buffer at every decode step.

`transposed=True` stores every projection kernel as a 2-D [out, in] copy ("kernel_t") and
multiplies by its transpose. In isolation XLA:CPU's bfloat16 vector-matrix product is fast only in
that orientation (~26 GB/s against ~0.9 GB/s at batch 1 on this machine), but inside the decode
loop XLA converts bfloat16 dots to float32 and hoists the converted weights out of the loop, so
neither orientation reads bfloat16 weights there; it is off by default.

Both produce the same numbers up to float summation order: they apply the same modules to the
same values.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3_jax.config import layer_segments
from qwen3_jax.model.block import DecoderLayer
from qwen3_jax.model.layers import Einsum, Embed, RMSNorm
from qwen3_jax.model.transformer import Output, attention_inputs, init_cache

STACKED_CACHE_AXES = ("layers", "batch", "cache_length", "act_kv_heads", "head_dim")
LAYER_CACHE_AXES = ("batch", "cache_length", "act_kv_heads", "head_dim")


class Stacked:
    """The model's own scanned forward (see the module docstring).

    Attributes:
      module: the `Qwen3` Linen module.
    """

    seq_axis = 2

    def __init__(self, module):
        self.module = module

    def prepare(self, params):
        """Params as the forward takes them (unchanged)."""
        return params

    def apply(self, params, ids, mask, cache, write_at, logits_at) -> Output:
        """Forward with a cache: see `Qwen3.__call__`."""
        return self.module.apply({"params": params}, ids, attention_mask=mask, cache=cache, write_at=write_at,
                                 logits_at=logits_at)

    def init_cache(self, batch: int, length: int):
        """An empty cache of `length` slots per row."""
        return init_cache(self.module.config, batch, length, self.module.dtype)

    def constrain(self, cache):
        """Places the cache by the logical rules (inside jit, under the mesh context)."""
        return jax.tree.map(lambda c: nn.with_logical_constraint(c, STACKED_CACHE_AXES), cache)


_PROJECTIONS = {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 2, "gate_proj": 1, "up_proj": 1, "down_proj": 1,
                "lm_head": 1}  # Einsum module name -> number of leading (contracted) kernel axes


def _transpose_kernels(tree):
    """Replaces {"kernel": [in..., out...]} of the projections by {"kernel_t": [out, in]}."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k in _PROJECTIONS and set(v) == {"kernel"} and v["kernel"].ndim <= 3:
            w = v["kernel"]
            n_in = _PROJECTIONS[k]
            w2 = w.reshape(math.prod(w.shape[:n_in]), math.prod(w.shape[n_in:]))
            out[k] = {"kernel_t": w2.T}
        elif isinstance(v, dict):
            out[k] = _transpose_kernels(v)
        else:
            out[k] = v
    return out


class Split(Stacked):
    """Per-layer params and cache, layer loop unrolled (see the module docstring).

    Attributes:
      transposed: keep projection kernels as [out, in] copies (see the module docstring).
    """

    seq_axis = 1

    def __init__(self, module, transposed: bool = False):
        super().__init__(module)
        self.transposed = transposed

    def prepare(self, params):
        """Splits every stacked segment into a tuple of per-layer trees (one copy, on device)."""
        segs = {s.name: s.length for s in layer_segments(self.module.config)}
        fix = _transpose_kernels if self.transposed else (lambda t: t)

        def split(p):
            return {k: (tuple(fix(jax.tree.map(lambda a, i=i: a[i], v)) for i in range(segs[k])) if k in segs
                        else (fix({k: v})[k] if k == "lm_head" else v))
                    for k, v in p.items()}

        return jax.jit(split)(params)

    def init_cache(self, batch: int, length: int):
        c = self.module.config
        shape = (batch, length, c.num_key_value_heads, c.head_dim)
        return {s.name: tuple({n: jnp.zeros(shape, self.module.dtype) for n in ("k", "v")} for _ in range(s.length))
                for s in layer_segments(c)}

    def constrain(self, cache):
        return jax.tree.map(lambda c: nn.with_logical_constraint(c, LAYER_CACHE_AXES), cache)

    def apply(self, params, ids, mask, cache, write_at, logits_at) -> Output:
        """The same computation as `Qwen3.__call__` with a cache, over split params."""
        m = self.module
        c, dt, pdt = m.config, m.dtype, m.param_dtype
        cos, sin, attn_mask = attention_inputs(c, ids.shape, dt, None, mask, True, write_at)
        embed = Embed(c.vocab_size, c.hidden_size, dt, pdt)
        x = embed.apply({"params": params["embed_tokens"]}, ids)
        x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
        new_cache = {}
        for seg in layer_segments(c):
            layer = DecoderLayer(c, seg.kind, dt, pdt, m.moe_impl,
                                 moe_capacity_factor=getattr(m, "moe_capacity_factor", None))
            out = []
            for lp, lc in zip(params[seg.name], cache[seg.name]):
                with nn.intercept_methods(_projection_as_matmul):
                    x, (lc, _, _) = layer.apply({"params": lp}, x, lc, cos, sin, attn_mask, write_at)
                out.append(lc)
            new_cache[seg.name] = tuple(out)
        x = RMSNorm(c.rms_norm_eps, "norm", pdt).apply({"params": params["norm"]}, x)
        if logits_at is not None:
            x = jnp.take_along_axis(x, logits_at.astype(jnp.int32)[:, None, None], axis=1)
        if c.tie_word_embeddings:
            logits = embed.apply({"params": params["embed_tokens"]}, x, method=Embed.attend)
        else:
            head = Einsum((c.hidden_size, c.vocab_size), ("embed", "vocab"), "BTD,DV->BTV", dtype=dt, param_dtype=pdt,
                          name="lm_head")
            with nn.intercept_methods(_projection_as_matmul):
                logits = head.apply({"params": params["lm_head"]}, x)
        logits = nn.with_logical_constraint(logits, ("batch", "length", "act_vocab"))
        return Output(logits=logits, cache=new_cache)


def _projection_as_matmul(next_fun, args, kwargs, context):
    """Flax method interceptor: projections as 2-D matmuls (see the module docstring)."""
    mod = context.module
    if not (isinstance(mod, Einsum) and context.method_name == "__call__"):
        return next_fun(*args, **kwargs)
    x = args[0]
    # Plain 2-D products ([B*T, in] x [in, out]) are the shapes XLA:CPU hands to its fast kernels.
    if mod.has_variable("params", "kernel_t"):
        wt = mod.get_variable("params", "kernel_t")  # [out, in]
        n_in = _PROJECTIONS[mod.name]
        x2 = x.reshape(-1, wt.shape[1]).astype(mod.dtype)
        y = jnp.dot(x2, wt.astype(mod.dtype).T)
        return y.reshape(*x.shape[:2], *mod.shape[n_in:])
    if mod.name != "o_proj":
        return next_fun(*args, **kwargs)
    kernel = mod.get_variable("params", "kernel")
    N, H, D = kernel.shape
    y = jnp.dot(x.reshape(-1, N * H).astype(mod.dtype), kernel.reshape(N * H, D).astype(mod.dtype))
    return y.reshape(*x.shape[:2], D)


LAYOUTS = {"stacked": Stacked, "split": Split}
