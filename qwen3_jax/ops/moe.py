"""Routing and dropless sparse expert computation on one device.

Every token is sent to its top-k experts; each (token, expert) pair is a "copy". Copies are sorted by
expert so that each expert multiplies one contiguous group of rows (a grouped matmul); nothing is
computed for experts a token did not pick, and nothing is dropped.

Two exact implementations of the grouped matmul, picked per backend (`impl="auto"`):
* "ragged": `jax.lax.ragged_dot`, the primitive that TPU/GPU grouped-matmul kernels serve.
* "tiled": for XLA:CPU, where ragged_dot measured ~100x below matmul speed. Each expert's group is
  padded to a multiple of a tile of `tm` rows; a loop over tiles runs one dense matmul per tile
  with that tile's expert weights, skipping the tiles past the end (`lax.cond`).
"dense" runs every expert on every token; it is the reference for tests and the naive baseline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qwen3_jax.sharding.platform import target_platform

IMPLS = ("auto", "tiled", "ragged", "dense")


def router_top_k(router_logits: jax.Array, top_k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The router's softmax over all experts (float32) and its top k: the one place this is written.

    Routing (`route`), the balance losses and the router statistics all start from it.

    Args:
      router_logits: [..., E] (any float dtype).
    Returns:
      probs [..., E] float32, top-k probabilities [..., R] float32, their expert ids [..., R] int32
      (R = top_k, highest first).
    """
    probs = jax.nn.softmax(router_logits.astype(jnp.float32), axis=-1)
    top, ids = jax.lax.top_k(probs, top_k)
    return probs, top, ids.astype(jnp.int32)


def route(router_logits: jax.Array, top_k: int, norm_topk_prob: bool, dtype) -> tuple[jax.Array, jax.Array]:
    """Top-k routing as in the reference.

    Softmax over *all* experts in float32 (router logits may be bfloat16), take the top k, optionally
    renormalise them to sum to one, then cast the weights to the activation dtype.

    Args:
      router_logits: [N, E].
    Returns:
      weights [N, k] in `dtype`, expert ids [N, k] int32.
    """
    _, weights, ids = router_top_k(router_logits, top_k)
    if norm_topk_prob:
        weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
    return weights.astype(dtype), ids.astype(jnp.int32)


def _swiglu(x, wg, wu, wd):
    return (jax.nn.silu(x @ wg) * (x @ wu)) @ wd


def _sort_copies(ids: jax.Array, num_experts: int):
    """Sorts the N*k copies by expert. Returns (order, sorted expert ids, group sizes [E])."""
    flat = ids.reshape(-1)
    order = jnp.argsort(flat, stable=True)  # sorted position -> copy index (token * k + slot)
    sizes = jnp.bincount(flat, length=num_experts).astype(jnp.int32)
    return order, flat[order], sizes


def _tile_rows(num_copies: int, num_experts: int) -> int:
    """Tile height: about the mean group size, a power of two in [8, 128]."""
    mean = max(1, -(-num_copies // num_experts))
    return int(min(128, max(8, 1 << (mean - 1).bit_length())))


def varying_axes(*arrays) -> tuple:
    """Mesh axes over which any of `arrays` varies inside `shard_map` (empty outside it)."""
    axes = set()
    for a in arrays:
        mat = getattr(jax.typeof(a), "manual_axis_type", None)
        axes |= set(getattr(mat, "varying", ()) or ())
    return tuple(sorted(axes))


def _zeros(shape, dtype, vma):
    # Inside shard_map both branches of a lax.cond (and a scan's carry) must vary over the same mesh
    # axes; plain zeros are invariant, so mark them varying like the values they stand in for.
    z = jnp.zeros(shape, dtype)
    return jax.lax.pcast(z, vma, to="varying") if vma else z


def tile_layout(sorted_e: jax.Array, sizes: jax.Array, num_experts: int, tm: int):
    """Places M expert-sorted rows into tiles of `tm` rows, each tile holding one expert's rows.

    Returns:
      dest [M] (row -> padded slot), num_tiles (static), tile_e [num_tiles] (expert of each tile),
      tile_used [num_tiles] (False for the tiles past the last group).
    """
    M = sorted_e.shape[0]
    padded = (sizes + tm - 1) // tm * tm  # [E]
    pad_end = jnp.cumsum(padded)
    pad_start = pad_end - padded
    group_start = jnp.cumsum(sizes) - sizes
    dest = pad_start[sorted_e] + jnp.arange(M, dtype=jnp.int32) - group_start[sorted_e]
    # Each non-empty group adds at most one partially filled tile, hence this static bound.
    num_tiles = -(-M // tm) + min(num_experts, M)
    tile_start = jnp.arange(num_tiles, dtype=jnp.int32) * tm
    tile_e = jnp.minimum(jnp.searchsorted(pad_end, tile_start, side="right"), num_experts - 1).astype(jnp.int32)
    return dest, num_tiles, tile_e, tile_start < pad_end[-1]


@jax.custom_vjp
def _tile_swiglu(xp, tile_e, tile_used, wg, wu, wd):
    """SwiGLU of each tile xp[t] [tm, D] with expert tile_e[t]'s weights; unused tiles give zeros."""
    vma = varying_axes(xp, wg, wu, wd)
    out_shape = (xp.shape[1], wd.shape[-1])

    def one_tile(args):
        xt, e, used = args
        return jax.lax.cond(used, lambda: _swiglu(xt, wg[e], wu[e], wd[e]).astype(xp.dtype),
                            lambda: _zeros(out_shape, xp.dtype, vma))

    return jax.lax.map(one_tile, (xp, tile_e, tile_used))


def _tile_swiglu_fwd(xp, tile_e, tile_used, wg, wu, wd):
    return _tile_swiglu(xp, tile_e, tile_used, wg, wu, wd), (xp, tile_e, tile_used, wg, wu, wd)


def _tile_swiglu_bwd(res, dy):
    """Hand-written backward: one pass over the tiles that accumulates each tile's weight gradient
    into its expert's slot of a float32 carry. Left to autodiff, every tile's weight cotangent is a
    full [E, D, F] array (a scatter into zeros), which made the backward ~15x the forward."""
    xp, tile_e, tile_used, wg, wu, wd = res
    vma = varying_axes(xp, wg, wu, wd, dy)
    f32 = jnp.float32

    def one_tile(carry, args):
        xt, e, used, dyt = args

        def compute():
            dwg, dwu, dwd = carry
            g, up = xt @ wg[e], xt @ wu[e]
            sig = jax.nn.sigmoid(g)
            act = g * sig
            da = dyt @ wd[e].T
            dup = da * act
            dg = da * up * (sig * (1 + g * (1 - sig)))
            dxt = (dg @ wg[e].T + dup @ wu[e].T).astype(xp.dtype)
            tdot = lambda a, b: jnp.matmul(a.T, b, preferred_element_type=f32)  # noqa: E731
            new = (dwg.at[e].add(tdot(xt, dg)), dwu.at[e].add(tdot(xt, dup)), dwd.at[e].add(tdot(act * up, dyt)))
            return new, dxt

        return jax.lax.cond(used, compute, lambda: (carry, _zeros(xt.shape, xp.dtype, vma)))

    init = tuple(_zeros(w.shape, f32, vma) for w in (wg, wu, wd))
    (dwg, dwu, dwd), dxp = jax.lax.scan(one_tile, init, (xp, tile_e, tile_used, dy))
    return dxp, None, None, dwg.astype(wg.dtype), dwu.astype(wu.dtype), dwd.astype(wd.dtype)


_tile_swiglu.defvjp(_tile_swiglu_fwd, _tile_swiglu_bwd)


def grouped_ffn_tiled(xs, sorted_e, sizes, wg, wu, wd, tm: int | None = None):
    """SwiGLU of each row of `xs` [M, D] (sorted by expert) with its expert's weights.

    Works inside `shard_map` too (the skipped-tile zeros vary over the same mesh axes as the rest).
    """
    M, D = xs.shape
    E = wg.shape[0]
    tm = tm or _tile_rows(M, E)
    dest, num_tiles, tile_e, tile_used = tile_layout(sorted_e, sizes, E, tm)
    xp = _zeros((num_tiles * tm, D), xs.dtype, varying_axes(xs)).at[dest].set(xs).reshape(num_tiles, tm, D)
    yp = _tile_swiglu(xp, tile_e, tile_used, wg, wu, wd).reshape(num_tiles * tm, -1)
    return yp[dest]


def grouped_ffn_ragged(xs, sizes, wg, wu, wd):
    h = jax.nn.silu(jax.lax.ragged_dot(xs, wg, sizes)) * jax.lax.ragged_dot(xs, wu, sizes)
    return jax.lax.ragged_dot(h, wd, sizes)


def resolve_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"unknown MoE implementation {impl!r}; expected one of {IMPLS}")
    if impl == "auto":
        # The platform compiled for (the context mesh's devices), not the host's default backend.
        return "tiled" if target_platform() == "cpu" else "ragged"
    return impl


def sparse_moe(x: jax.Array, weights: jax.Array, ids: jax.Array, wg: jax.Array, wu: jax.Array,
               wd: jax.Array, impl: str = "auto") -> jax.Array:
    """Weighted sum of each token's top-k expert SwiGLU outputs.

    Args:
      x: [N, D] tokens.
      weights, ids: [N, k] routing weights and expert ids (from `route`).
      wg, wu: [E, D, F] gate and up projections; wd: [E, F, D] down projection.
      impl: "auto", "tiled", "ragged" or "dense" (see module docstring).

    Returns:
      [N, D] in x's dtype.
    """
    impl = resolve_impl(impl)
    N, k = ids.shape
    E = wg.shape[0]
    if impl == "dense":
        combine = jnp.zeros((N, E), x.dtype).at[jnp.arange(N)[:, None], ids].add(weights)  # [N, E]
        outs = jax.vmap(lambda g, u, d: _swiglu(x, g, u, d))(wg, wu, wd)  # [E, N, D]
        return jnp.einsum("ME,EMD->MD", combine, outs.astype(x.dtype))
    order, sorted_e, sizes = _sort_copies(ids, E)
    xs = x[order // k]  # [M, D] token rows in expert order
    if impl == "tiled":
        ys = grouped_ffn_tiled(xs, sorted_e, sizes, wg, wu, wd)
    else:
        ys = grouped_ffn_ragged(xs, sizes, wg, wu, wd)
    copies = jnp.zeros((N * k, ys.shape[-1]), x.dtype).at[order].set(ys.astype(x.dtype))
    return jnp.einsum("MRD,MR->MD", copies.reshape(N, k, -1), weights)
