"""Dual Chunk Attention against a direct reference written from its description.

The reference builds the whole [T, S] logit matrix: each (query p, key j) logit takes the query
rotated at p mod s (same chunk), min(p mod s + s, c) (previous chunk) or min(2s - 1, c) (earlier
chunks) against the key rotated at j mod s, times the length factors of both tokens; then one
softmax. The functions under test instead merge separately computed parts by log-sum-exp, chunk
by chunk (prefill) or under masks (decode against a cache).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3_jax.model.rope import apply_rope, rope_cos_sin
from qwen3_jax.ops.attention import causal_mask, dot_product_attention
from qwen3_jax.ops.dual_chunk_attention import (chunk_length, dca_positions, dual_chunk_masked, dual_chunk_prefill,
                                                length_scale)

B, N, K, H = 2, 4, 2, 16
INV_FREQ = 1.0 / (10000.0 ** (np.arange(0, H, 2, dtype=np.float32) / H))


def _rot(x, pos, f=None):
    """x [B, T, heads, H] rotated at integer positions [B, T], times the factors f [B, T]."""
    cos, sin = rope_cos_sin(pos, INV_FREQ, 1.0, jnp.float32)
    y = apply_rope(x, cos, sin)
    return y if f is None else y * f[:, :, None, None]


def _qkv(T, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(ks[0], (B, T, N, H)), jax.random.normal(ks[1], (B, T, K, H)),
            jax.random.normal(ks[2], (B, T, K, H)))


def reference(q, k, v, c, l, f):
    """DCA written out per (query, key) pair; f [B, T] the length factor of each token."""
    T = q.shape[1]
    s = c - l
    p = np.arange(T)
    pos = lambda a: jnp.broadcast_to(jnp.asarray(a, jnp.int32), (B, T))
    q_same = _rot(q, pos(p % s))
    q_prev = _rot(q, pos(np.minimum(p % s + s, c)))
    q_far = _rot(q, pos(np.full(T, min(2 * s - 1, c))))
    kr = jnp.repeat(_rot(k, pos(p % s)), N // K, axis=2)  # [B, S, N, H]
    logit = {name: jnp.einsum("btnh,bsnh->bnts", qq, kr) for name, qq in
             (("same", q_same), ("prev", q_prev), ("far", q_far))}
    cq, ck = (p // s)[:, None], (p // s)[None, :]
    chosen = jnp.where(cq == ck, logit["same"], jnp.where(cq - 1 == ck, logit["prev"], logit["far"]))
    chosen = chosen * H ** -0.5 * f[:, None, :, None] * f[:, None, None, :]
    chosen = jnp.where((p[None, :] <= p[:, None])[None, None], chosen, -jnp.inf)
    probs = jax.nn.softmax(chosen, axis=-1)
    return jnp.einsum("bnts,bsnh->btnh", probs, jnp.repeat(v, N // K, axis=2))


def _dca_inputs(q, k, c, l, f):
    T = q.shape[1]
    pos = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    intra, succ, inter = dca_positions(pos, c, l)
    return _rot(q, intra, f), _rot(q, succ, f), _rot(q, inter, f), _rot(k, intra, f)


def test_positions_and_length_scale():
    intra, succ, inter = dca_positions(jnp.arange(30), 12, 4)  # s = 8
    assert intra.tolist() == [p % 8 for p in range(30)]
    assert succ.tolist() == [min(p % 8 + 8, 12) for p in range(30)]
    assert inter.tolist() == [12] * 30
    np.testing.assert_allclose(length_scale(1010000, 262144), 0.1 * np.log(1010000 / 262144) + 1, rtol=1e-6)
    assert float(length_scale(1000, 262144)) == 1.0 and float(length_scale(10**6, 0)) == 1.0
    with pytest.raises(ValueError, match="chunk_size > local_size"):
        chunk_length(8, 8)


def test_one_chunk_without_scaling_is_plain_attention():
    T, c, l = 20, 32, 8  # T <= s = 24: every key is in the query's chunk, at its true position
    q, k, v = _qkv(T)
    f = jnp.ones((B, T))
    qi, qs, qn, kr = _dca_inputs(q, k, c, l, f)
    out = dual_chunk_prefill(qi, qs, qn, kr, v, chunk_len=chunk_length(c, l))
    pos = jnp.broadcast_to(jnp.arange(T), (B, T))
    plain = dot_product_attention(_rot(q, pos), _rot(k, pos), v, causal_mask(pos, jnp.ones((B, T), bool)), H ** -0.5)
    np.testing.assert_allclose(out, plain, atol=1e-5)


@pytest.mark.parametrize("c,l", [(16, 4), (10, 6)])  # s = 12 > l, and s = 4 < l (inter position 2s-1 < c)
def test_prefill_equals_reference_on_many_chunks(c, l):
    T = 50
    q, k, v = _qkv(T, 1)
    f = jnp.broadcast_to(length_scale(T, 16), (B, T))  # prefill: every token carries f(T)
    assert float(f[0, 0]) > 1.1
    qi, qs, qn, kr = _dca_inputs(q, k, c, l, f)
    ref = reference(q, k, v, c, l, f)
    out = dual_chunk_prefill(qi, qs, qn, kr, v, chunk_len=chunk_length(c, l))
    np.testing.assert_allclose(out, ref, atol=1e-5)
    pos = jnp.broadcast_to(jnp.arange(T), (B, T))
    masked = dual_chunk_masked(qi, qs, qn, kr, v, causal_mask(pos, jnp.ones((B, T), bool)), pos, pos,
                               chunk_len=chunk_length(c, l))
    np.testing.assert_allclose(masked, ref, atol=1e-5)


def test_prefill_with_padding_segment_leaves_real_rows_unchanged():
    T, c, l = 40, 16, 4
    q, k, v = _qkv(T, 2)
    f = jnp.ones((B, T))
    qi, qs, qn, kr = _dca_inputs(q, k, c, l, f)
    valid = np.ones((B, T), np.int32)
    valid[1, 29:] = 0  # row 1: 29 real tokens, then padding
    out = dual_chunk_prefill(qi, qs, qn, kr, v, chunk_len=12, segment_ids=jnp.asarray(valid))
    short = reference(q[:, :29], k[:, :29], v[:, :29], c, l, f[:, :29])
    np.testing.assert_allclose(out[1, :29], short[1], atol=1e-5)


def test_token_by_token_decode_against_a_cache_equals_reference():
    """Prompt of P tokens, then one token at a time; keys keep the factor of the step that wrote them."""
    T, P, c, l, orig = 44, 20, 16, 4, 8
    s = chunk_length(c, l)
    q, k, v = _qkv(T, 3)
    t = np.arange(T)
    f = jnp.broadcast_to(length_scale(np.maximum(P, t + 1), orig), (B, T))  # f_t = sf(max(P, t + 1))
    ref = reference(q, k, v, c, l, f)
    qi, qs, qn, kr = _dca_inputs(q, k, c, l, f)
    # prefill of the prompt (every token at f(P)), then decode steps against the cache layout
    out_p = dual_chunk_prefill(qi[:, :P], qs[:, :P], qn[:, :P], kr[:, :P], v[:, :P], chunk_len=s)
    np.testing.assert_allclose(out_p, ref[:, :P], atol=1e-5)
    k_cache = jnp.transpose(kr, (0, 2, 1, 3))  # [B, K, S, H]
    v_cache = jnp.transpose(v, (0, 2, 3, 1))   # [B, K, H, S]
    kv_pos = jnp.broadcast_to(jnp.arange(T), (B, T))
    decode = jax.jit(dual_chunk_masked, static_argnames=("chunk_len", "kv_layout"))
    for step in range(P, T):
        mask = jnp.broadcast_to(jnp.arange(T) <= step, (B, 1, T))  # later slots are still empty
        qpos = jnp.full((B, 1), step)
        o = decode(qi[:, step:step + 1], qs[:, step:step + 1], qn[:, step:step + 1], k_cache, v_cache, mask,
                              qpos, kv_pos, chunk_len=s, kv_layout="cache")
        np.testing.assert_allclose(o[:, 0], ref[:, step], atol=1e-5, err_msg=f"decode step {step}")


@pytest.mark.slow  # interpret mode
def test_prefill_with_the_flash_kernel_per_block():
    from qwen3_jax.ops.flash_attention import flash_attention

    T, c, l = 40, 16, 4
    q, k, v = _qkv(T, 4)
    f = jnp.broadcast_to(length_scale(T, 16), (B, T))
    qi, qs, qn, kr = _dca_inputs(q, k, c, l, f)
    block = functools.partial(flash_attention, return_lse=True, block_q=8, block_k=8)
    out = dual_chunk_prefill(qi, qs, qn, kr, v, chunk_len=12, block_fn=block)
    np.testing.assert_allclose(out, reference(q, k, v, c, l, f), atol=1e-5)
