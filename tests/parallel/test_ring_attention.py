"""Ring attention on 8 CPU devices against single-device attention, values and gradients.

The reference is `ops.attention.dot_product_attention` with the boolean mask of `causal_mask`
(the model's own attention, itself parity-tested against transformers), on the whole sequence.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3_jax.ops.attention import causal_mask, dot_product_attention
from qwen3_jax.ops.block_attention import attention_with_lse, merge
from qwen3_jax.ops.ring_attention import from_zigzag, ring_attention, to_zigzag, zigzag_order
from qwen3_jax.sharding.mesh import make_mesh

B, T, N, K, H = 2, 64, 4, 2, 16


def _inputs(seed=0):
    ks = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(ks[0], (B, T, N, H))
    k = jax.random.normal(ks[1], (B, T, K, H))
    v = jax.random.normal(ks[2], (B, T, K, H))
    target = jax.random.normal(ks[3], (B, T, N, H))
    return q, k, v, target


def _segments():
    # Row 0: three packed documents of odd lengths; row 1: one document.
    row0 = np.repeat([1, 2, 3], [13, 30, 21])
    return jnp.asarray(np.stack([row0, np.ones(T, int)]), jnp.int32)


def _reference(q, k, v, seg, causal):
    slots = jnp.broadcast_to(jnp.arange(T), (B, T))
    mask = causal_mask(slots, jnp.ones((B, T), bool), seg)
    if not causal:
        mask = jnp.ones((B, T, T), bool) if seg is None else seg[:, :, None] == seg[:, None, :]
    return dot_product_attention(q, k, v, mask, H ** -0.5)


def _value_and_grads(fn, q, k, v, target):
    def loss(q, k, v):
        out = fn(q, k, v)
        return jnp.sum(out * target), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    return out, grads


def test_zigzag_order_puts_chunks_i_and_2n_minus_1_minus_i_on_device_i():
    order = zigzag_order(16, 4)  # 8 chunks of 2
    per_device = order.reshape(4, 4) // 2
    assert per_device.tolist() == [[0, 0, 7, 7], [1, 1, 6, 6], [2, 2, 5, 5], [3, 3, 4, 4]]
    x = jnp.arange(32).reshape(2, 16)
    np.testing.assert_array_equal(from_zigzag(to_zigzag(x, 4), 4), x)
    with pytest.raises(ValueError, match="not divisible by 2 x sequence axis"):
        zigzag_order(12, 4)


def test_merge_of_two_key_halves_equals_attention_over_all_keys():
    q, k, v, _ = _inputs()
    full, lse = attention_with_lse(q, k, v, causal=False)
    a = attention_with_lse(q, k[:, :20], v[:, :20], causal=False)
    b = attention_with_lse(q, k[:, 20:], v[:, 20:], causal=False)
    out, lse2 = merge([a, b])
    np.testing.assert_allclose(out, full, atol=1e-5)
    np.testing.assert_allclose(lse2, lse, atol=1e-5)


@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
@pytest.mark.parametrize("causal,packed", [(True, False), (True, True), (False, True)])
def test_ring_equals_one_device(layout, causal, packed):
    mesh = make_mesh("sequence=8")
    q, k, v, target = _inputs()
    seg = _segments() if packed else None
    ref_out, ref_grads = _value_and_grads(lambda q, k, v: _reference(q, k, v, seg, causal), q, k, v, target)

    n = 8
    perm = (lambda x: to_zigzag(x, n)) if layout == "zigzag" else (lambda x: x)
    unperm = (lambda x: from_zigzag(x, n)) if layout == "zigzag" else (lambda x: x)
    zseg = None if seg is None else perm(seg)

    def ring(q, k, v):
        return ring_attention(q, k, v, zseg, causal=causal, layout=layout)

    with jax.set_mesh(mesh):
        out, grads = jax.jit(lambda *a: _value_and_grads(ring, *a))(perm(q), perm(k), perm(v), perm(target))
    np.testing.assert_allclose(unperm(out), ref_out, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(unperm(g), r, atol=1e-4)


def test_ring_with_batch_and_heads_split_too():
    mesh = make_mesh("data=2,tensor=2,sequence=2")
    q, k, v, target = _inputs(1)
    seg = _segments()
    ref_out, ref_grads = _value_and_grads(lambda q, k, v: _reference(q, k, v, seg, True), q, k, v, target)
    zs = to_zigzag(seg, 2)

    def ring(q, k, v):
        return ring_attention(q, k, v, zs, layout="zigzag")

    z = [to_zigzag(x, 2) for x in (q, k, v, target)]
    with jax.set_mesh(mesh):
        out, grads = jax.jit(lambda *a: _value_and_grads(ring, *a))(*z)
    np.testing.assert_allclose(from_zigzag(out, 2), ref_out, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(from_zigzag(g, 2), r, atol=1e-4)


def test_ring_rejects_lengths_the_layout_cannot_split():
    mesh = make_mesh("sequence=8")
    q = jnp.zeros((1, 24, 2, 8))
    with jax.set_mesh(mesh), pytest.raises(ValueError, match="not divisible by 16"):
        jax.jit(lambda q: ring_attention(q, q, q, layout="zigzag"))(q)


@pytest.mark.slow  # interpret mode
def test_ring_with_the_flash_kernel_per_block():
    """The Pallas flash kernel (interpret mode on CPU) in the block slot, gradients through its lse."""
    from qwen3_jax.ops.flash_attention import flash_attention

    block = functools.partial(flash_attention, return_lse=True, block_q=8, block_k=8)
    mesh = make_mesh("sequence=4", jax.devices()[:4])
    q, k, v, target = _inputs(2)
    seg = _segments()
    ref_out, ref_grads = _value_and_grads(lambda q, k, v: _reference(q, k, v, seg, True), q, k, v, target)
    zs = to_zigzag(seg, 4)

    def ring(q, k, v):
        return ring_attention(q, k, v, zs, layout="zigzag", block_fn=block)

    with jax.set_mesh(mesh):
        out, grads = jax.jit(lambda *a: _value_and_grads(ring, *a))(*[to_zigzag(x, 4) for x in (q, k, v, target)])
    np.testing.assert_allclose(from_zigzag(out, 4), ref_out, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(from_zigzag(g, 4), r, atol=1e-4)
