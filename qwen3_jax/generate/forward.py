"""The model forward pass as the decode loop calls it, in two parameter layouts.

`Stacked` calls the model as it is: layers scanned over params stacked [L, ...] and a cache of
keys [L, B, K, S, H] and values [L, B, K, H, S]. Inside a decode loop that costs memory traffic on
XLA:CPU: every step slices each layer's weights out of the stack (a copy written and read again
before the matmul) and rebuilds the stacked cache.

`Split` runs the same model with `unrolled=True` (see `Qwen3`): the same `DecoderLayer` modules
over per-layer params (prepared once, when the engine is built) and a per-layer cache, the layer
loop unrolled at trace time, so each matmul reads its weights where they lie and each cache update
is in place. The price is a second copy of the layer weights held by the engine. Each projection becomes one 2-D matrix product (batch 1
decode is a vector-matrix product, which XLA:CPU runs near memory bandwidth only in these shapes;
a Flax method interceptor, `_Matmuls`, swaps them in for the modules' einsums):

* `o_proj` ("BTNH,NHD->BTD") as a product over N*H (a free reshape of its row-major kernel); with
  two contracting axes XLA:CPU otherwise copies the kernel into a fresh buffer at every step.
* `fuse=True` concatenates q/k/v into one matrix and gate/up into another (two products per layer
  instead of five, each reading a longer run of memory); the results are split after the product.
  Off under a mesh, where the concatenation would mix the heads each device holds.
* `transposed` (the default) keeps the kernels as [out, in] matrices, the orientation in which
  XLA:CPU's batch-1 products run near memory bandwidth: float32 as w_t @ xᵀ (a GEMV, ~30-40 GB/s;
  x @ w with [in, out] weights reaches ~21-29 GB/s, x @ w_tᵀ ~2.5), bfloat16 as x @ w_tᵀ (a fused
  loop that converts each weight as it reads it, ~35 GB/s, against ~1.5 GB/s for the others).
  With bfloat16, `o_proj`'s input (the attention output) is first materialised as a plain matrix
  (`_as_matrix`), without which the fused loop runs ~10x slower on it.

The cache is float32 whatever the model's dtype. XLA:CPU updates a bfloat16 buffer by converting
all of it to float32 and back, and converts the whole bfloat16 cache to float32 for the attention
products, for every layer at every step; a float32 cache holding the bfloat16-rounded keys and
values gives the same numbers with neither (at twice the cache memory).

Prefill of a bfloat16 model is compiled with XLA:CPU's YNNPACK dot fusions (`prefill_options`):
by default XLA:CPU converts every bfloat16 weight to float32 before each product (at 3-5 GB/s, a
quarter of the prefill); the library's kernels read bfloat16 directly (~10% faster prefill here;
no gain for float32 or for decode, so those keep the defaults).

The decode loop also passes `Split` params through its carry behind an optimization barrier
(`carry_params`): loop-invariant weights would otherwise let XLA hoist their bfloat16 -> float32
conversion out of the loop and read float32 copies at every step.

Both layouts produce the same numbers up to float summation order: they apply the same modules to
the same values.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qwen3_jax.config import layer_segments
from qwen3_jax.model.layers import Einsum, Embed
from qwen3_jax.model.transformer import Output, init_cache

# Logical axes of one layer's cache: keys [B, K, S, H], values [B, K, H, S] (see `update_cache`).
CACHE_AXES = {"k": ("batch", "act_kv_heads", "cache_length", "head_dim"),
              "v": ("batch", "act_kv_heads", "head_dim", "cache_length")}
SEQ_AXIS = {"k": -2, "v": -1}  # the slot axis of each, counted from the end


def _constrain(cache, stacked: bool):
    def one(path, c):
        name = path[-1].key
        return nn.with_logical_constraint(c, (("layers",) if stacked else ()) + CACHE_AXES[name])

    return jax.tree_util.tree_map_with_path(one, cache)


class Stacked:
    """The model's own scanned forward (see the module docstring).

    Attributes:
      module: the `Qwen3` Linen module.
    """

    carry_params = False
    prefill_options = None  # XLA compiler options for the prefill (None: the defaults)

    def __init__(self, module):
        self.module = module

    def prepare(self, params):
        """Params as the forward takes them (unchanged)."""
        return params

    def apply(self, params, ids, mask, cache, write_at, logits_at, positions=None) -> Output:
        """Forward with a cache: `Qwen3.__call__` (mask is its attention_mask, over the cache slots)."""
        return self.module.apply({"params": params}, ids, positions, mask, cache, write_at, logits_at=logits_at)

    def init_cache(self, batch: int, length: int):
        """An empty cache of `length` slots per row."""
        return init_cache(self.module.config, batch, length, self.module.dtype)

    def constrain(self, cache):
        """Places the cache by the logical rules (inside jit, under the mesh context)."""
        return _constrain(cache, stacked=True)


# Einsum module name -> number of leading (contracted) kernel axes.
_PROJECTIONS = {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 2, "gate_proj": 1, "up_proj": 1, "down_proj": 1,
                "lm_head": 1}
# A fused product is stored under its first projection; the others are left empty ({}).
_FUSED = {"q_proj": ("q_proj", "k_proj", "v_proj"), "gate_proj": ("gate_proj", "up_proj")}


def _matrix(kernel, name: str):
    """A projection kernel [in..., out...] as a 2-D [in, out] matrix (a free reshape)."""
    n_in = _PROJECTIONS[name]
    return kernel.reshape(math.prod(kernel.shape[:n_in]), math.prod(kernel.shape[n_in:]))


def _prepare_projections(tree: dict, transposed: bool, fuse: bool) -> dict:
    """Replaces {"kernel"} of the projections in a layer's params by 2-D matrices (see above).

    A projection becomes {"w": [in, out]} or {"w_t": [out, in]}; a fused group stores the
    concatenated matrix under its first member and {} under the others.
    """
    def is_proj(name, v):
        return name in _PROJECTIONS and isinstance(v, dict) and set(v) == {"kernel"}

    out = {}
    for name, v in tree.items():
        if not is_proj(name, v):
            out[name] = _prepare_projections(v, transposed, fuse) if isinstance(v, dict) else v
            continue
        if name in out:  # already written as part of a fused group
            continue
        group = _FUSED.get(name, (name,)) if fuse else (name,)
        if not all(is_proj(g, tree.get(g)) for g in group):
            group = (name,)
        w = jnp.concatenate([_matrix(tree[g]["kernel"], g) for g in group], axis=1)
        out[name] = {"w_t": w.T} if transposed else {"w": w}
        out.update({g: {} for g in group[1:]})
    return out


def _matmul_t(x, w_t, dt):
    """x [B, T, in] times w_t [out, in] transposed: [B, T, out] in dtype dt.

    float32: one matrix-vector product with the weights on the left (w_t @ xᵀ), XLA:CPU's fast
    float32 form. bfloat16: xᵀ on the left, one product per row at decode (T == 1): the shape
    XLA:CPU runs as a fused loop over bfloat16 weights; with several rows it falls back to a far
    slower bfloat16 GEMM.
    """
    B, T = x.shape[:2]
    x2 = x.reshape(B * T, -1).astype(dt)
    w = w_t.astype(dt)
    if jnp.dtype(dt) == jnp.float32:
        y = jnp.dot(w, x2.T).T
    elif T == 1 and B > 1:
        y = jnp.concatenate([jnp.dot(x2[r:r + 1], w.T) for r in range(B)], axis=0)
    else:
        y = jnp.dot(x2, w.T)
    return y.reshape(B, T, w.shape[0])


def _as_matrix(x):
    """x [B, T, ...] materialised as a [B * T, rest] matrix (same values, same shape back).

    XLA:CPU folds reshapes into the fused bfloat16 vector-matrix loop that consumes them; fed the
    attention output in the multi-axis layout its products left, the loop recomputes that index for
    every weight element and runs at ~4 GB/s instead of ~35. A reduction is never fused into its
    consumer, so summing the matrix with zeros hands the loop a plain [B * T, rest] buffer.
    """
    x2 = x.reshape(x.shape[0] * x.shape[1], -1)
    return jnp.sum(jnp.stack([x2, jnp.zeros_like(x2)]), axis=0, dtype=x.dtype).reshape(x.shape)


class _Matmuls:
    """Flax method interceptor: the projections of `_prepare_projections` as 2-D products.

    A fused product's other parts wait in `pending` until their own module is called (each
    layer calls q, k, v, then gate, up, in that order, with the same input).
    """

    def __init__(self, config, transposed: bool):
        self.config = config
        self.transposed = transposed
        self.pending = {}

    def out_dims(self, name: str, mod) -> tuple[int, ...]:
        c = self.config
        if name in ("k_proj", "v_proj"):
            return (c.num_key_value_heads, c.head_dim)
        if name == "up_proj":
            return (c.intermediate_size,)
        return tuple(mod.shape[_PROJECTIONS[name]:])

    def __call__(self, next_fun, args, kwargs, context):
        mod = context.module
        if isinstance(mod, Embed) and context.method_name == "attend" and self.transposed:
            # the tied head: the [V, D] table already is an [out, in] matrix
            return _matmul_t(args[0], mod.get_variable("params", "embedding"), mod.dtype)
        if not (isinstance(mod, Einsum) and context.method_name == "__call__"):
            return next_fun(*args, **kwargs)
        if mod.name in self.pending:
            return self.pending.pop(mod.name)
        if mod.has_variable("params", "w"):
            w, transposed = mod.get_variable("params", "w"), False
        elif mod.has_variable("params", "w_t"):
            w, transposed = mod.get_variable("params", "w_t"), True
        else:
            return next_fun(*args, **kwargs)
        x = args[0]
        lead = x.shape[:2]
        if transposed and w.dtype.itemsize == 2 and x.ndim > 3:  # o_proj's [B, T, N, H] input
            x = _as_matrix(x)
        dt = jnp.promote_types(mod.dtype, w.dtype)
        if transposed:
            y = _matmul_t(x, w, dt).reshape(-1, w.shape[0]).astype(mod.dtype)
        else:
            y = jnp.dot(x.reshape(-1, w.shape[0]).astype(dt), w.astype(dt)).astype(mod.dtype)
        group = _FUSED.get(mod.name, (mod.name,))
        dims = [self.out_dims(g, mod) for g in group]
        sizes = [math.prod(d) for d in dims]
        if sum(sizes) != y.shape[1]:  # not fused
            group, dims, sizes = (mod.name,), dims[:1], sizes[:1]
        parts = jnp.split(y, np.cumsum(sizes)[:-1].tolist(), axis=1) if len(group) > 1 else [y]
        for g, d, part in zip(group[1:], dims[1:], parts[1:]):
            self.pending[g] = part.reshape(*lead, *d)
        return parts[0].reshape(*lead, *dims[0])


class Split(Stacked):
    """Per-layer params and cache, layer loop unrolled (see the module docstring).

    Attributes:
      transposed: projection matrices stored [out, in] (True, the fast one at batch 1) or [in, out]
        (False; ~10% faster float32 decode at batch 8, far slower bfloat16).
      fuse: one product for q/k/v and one for gate/up.
    """

    carry_params = True

    def __init__(self, module, transposed: bool = True, fuse: bool = False):
        super().__init__(module)
        if transposed not in (True, False):
            raise ValueError(f"transposed must be True or False, got {transposed!r}")
        self.transposed = bool(transposed)
        self.fuse = fuse
        self._split = None

    def prepare(self, params):
        """Splits every stacked segment into per-layer trees {"0": ..., "1": ...} (one copy, on device).

        One jitted function per instance: new params of the same shapes (an RL policy after each
        update) reuse its compiled program.
        """
        if self._split is None:
            self._split = jax.jit(self._split_fn())
        return self._split(params)

    def _split_fn(self):
        segs = {s.name: s.length for s in layer_segments(self.module.config)}

        def fix(t):
            return _prepare_projections(t, self.transposed, self.fuse)

        def split(p):
            return {k: ({str(i): fix(jax.tree.map(lambda a, i=i: a[i], v)) for i in range(segs[k])} if k in segs
                        else (fix({k: v})[k] if k == "lm_head" else v))
                    for k, v in p.items()}

        return split

    @property
    def prefill_options(self) -> dict | None:
        """XLA compiler options for the prefill (see the module docstring); None for the defaults."""
        if jax.default_backend() == "cpu" and jnp.dtype(self.module.dtype).itemsize == 2:
            return {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
        return None

    def init_cache(self, batch: int, length: int):
        """Per layer: keys [B, K, S, H], values [B, K, H, S] (zeros), float32 (see the module docstring)."""
        return init_cache(self.module.config, batch, length, jnp.float32, unrolled=True)

    def constrain(self, cache):
        return _constrain(cache, stacked=False)

    def apply(self, params, ids, mask, cache, write_at, logits_at, positions=None) -> Output:
        """`Qwen3.__call__` with a cache, unrolled over the split params, projections as 2-D products."""
        with nn.intercept_methods(_Matmuls(self.module.config, self.transposed)):
            return self.module.clone(unrolled=True).apply({"params": params}, ids, positions, mask, cache, write_at,
                                                          logits_at=logits_at)


LAYOUTS = {"stacked": Stacked, "split": Split}
