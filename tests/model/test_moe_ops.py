"""The single-device expert paths agree: tiled (CPU), ragged_dot, and every-expert-on-every-token,
in values and gradients, including skewed routing and tiles that straddle group ends."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3_jax.ops import moe as moe_ops


def _problem(n=37, d=16, f=8, e=6, k=2, seed=0, skew=False):
    ks = jax.random.split(jax.random.key(seed), 5)
    x = jax.random.normal(ks[0], (n, d))
    logits = jax.random.normal(ks[1], (n, e))
    if skew:  # nearly every token picks experts 0 and 1: one big group, several empty ones
        logits = logits.at[:, :2].add(10.0)
    w, ids = moe_ops.route(logits, k, True, jnp.float32)
    wg, wu = (jax.random.normal(k_, (e, d, f)) * 0.3 for k_ in ks[2:4])
    wd = jax.random.normal(ks[4], (e, f, d)) * 0.3
    return x, w, ids, wg, wu, wd


def _loop_reference(x, w, ids, wg, wu, wd):
    out = np.zeros(x.shape, np.float64)
    x, w, ids = (np.asarray(a, np.float64) for a in (x, w, ids))
    for t in range(x.shape[0]):
        for slot in range(ids.shape[1]):
            e = int(ids[t, slot])
            g, u, d = (np.asarray(a[e], np.float64) for a in (wg, wu, wd))
            h = x[t] @ g
            out[t] += w[t, slot] * (((h / (1 + np.exp(-h))) * (x[t] @ u)) @ d)
    return out


@pytest.mark.parametrize("skew", [False, True])
@pytest.mark.parametrize("impl", ["tiled", "ragged", "dense"])
def test_matches_a_per_token_loop(impl, skew):
    args = _problem(skew=skew)
    got = moe_ops.sparse_moe(*args, impl=impl)
    np.testing.assert_allclose(np.asarray(got), _loop_reference(*args), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tm", [8, 16, 128])
def test_tiled_any_tile_height(tm):
    x, w, ids, wg, wu, wd = _problem(n=50, skew=True)
    order, sorted_e, sizes = moe_ops._sort_copies(ids, wg.shape[0])
    xs = x[order // ids.shape[1]]
    got = moe_ops.grouped_ffn_tiled(xs, sorted_e, sizes, wg, wu, wd, tm=tm)
    want = moe_ops.grouped_ffn_ragged(xs, sizes, wg, wu, wd)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)


def test_gradients_agree_across_implementations():
    x, w, ids, wg, wu, wd = _problem(n=24)

    def loss(impl, x, w, wg, wu, wd):
        return jnp.sum(jnp.sin(moe_ops.sparse_moe(x, w, ids, wg, wu, wd, impl=impl)))

    grads = {impl: jax.grad(lambda *a: loss(impl, *a), argnums=(0, 1, 2, 3, 4))(x, w, wg, wu, wd)
             for impl in ("tiled", "ragged", "dense")}
    for impl in ("tiled", "ragged"):
        for a, b in zip(grads[impl], grads["dense"]):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


def test_route_matches_reference_rules():
    logits = jnp.array([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    p = np.exp(np.arange(4.0)) / np.exp(np.arange(4.0)).sum()
    w, ids = moe_ops.route(logits, 2, False, jnp.float32)
    np.testing.assert_array_equal(np.asarray(ids), [[3, 2], [0, 1]])
    np.testing.assert_allclose(np.asarray(w)[0], [p[3], p[2]], rtol=1e-6)  # softmax over all experts
    w, _ = moe_ops.route(logits, 2, True, jnp.float32)
    np.testing.assert_allclose(np.asarray(w)[0], [p[3] / (p[3] + p[2]), p[2] / (p[3] + p[2])], rtol=1e-6)


def test_unknown_impl_is_refused():
    with pytest.raises(ValueError, match="unknown MoE implementation 'fast'"):
        moe_ops.sparse_moe(*_problem(), impl="fast")


def _all_eqns(jaxpr):
    for q in jaxpr.eqns:
        yield q
        for v in q.params.values():
            inner = getattr(v, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                yield from _all_eqns(inner)


def test_sparse_path_does_not_compute_every_expert():
    """The tiled path's matmul rows scale with N*k, not N*E: read the tile loop off the jaxpr."""
    n, d, f, e, k = 512, 64, 32, 64, 2
    args = _problem(n=n, d=d, f=f, e=e, k=k)
    jaxpr = jax.make_jaxpr(lambda *a: moe_ops.sparse_moe(*a, impl="tiled"))(*args).jaxpr
    # the tile loop: the scan whose first scanned input is [tiles, tm, D] token rows
    def first_xs(q):
        i = q.params["num_consts"] + q.params["num_carry"]
        return q.invars[i].aval.shape if i < len(q.invars) else ()

    (loop,) = [q for q in _all_eqns(jaxpr) if q.primitive.name == "scan" and len(first_xs(q)) == 3]
    tiles = loop.params["length"]
    first_x = loop.params["num_consts"] + loop.params["num_carry"]
    tm, width = loop.params["jaxpr"].jaxpr.invars[first_x].aval.shape  # one tile of token rows [tm, D]
    assert width == d
    rows = tiles * tm
    # at most one partly filled tile per expert on top of the N*k real rows
    assert rows <= n * k + e * tm
    assert rows < 0.25 * n * e  # what running every expert on every token would cost
