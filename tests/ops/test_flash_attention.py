"""Flash attention (Pallas kernels in interpret mode) against the plain-JAX reference.

float32 throughout: values within 1e-5, gradients within 1e-4. Shapes are tiny because interpret
mode runs every grid step as XLA operations; lengths are deliberately not multiples of the blocks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3_jax.ops.attention_reference import attention_reference
from qwen3_jax.ops.block_attention import NO_KEYS
from qwen3_jax.ops.flash_attention import flash_attention


def _qkv(B, T, S, N, K, H, seed=0):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.normal(size=(B, T, N, H)), jnp.float32)
    k = jnp.asarray(r.normal(size=(B, S, K, H)), jnp.float32)
    v = jnp.asarray(r.normal(size=(B, S, K, H)), jnp.float32)
    return q, k, v


def _packed_ids(B, T, seed):
    """Segment ids 0, 0, ..., 1, 1, ... with random boundaries per row (ascending, as packing gives)."""
    r = np.random.default_rng(seed)
    rows = []
    for _ in range(B):
        cuts = np.sort(r.choice(np.arange(1, T), size=3, replace=False))
        rows.append(np.searchsorted(cuts, np.arange(T), side="right"))
    return jnp.asarray(np.stack(rows), jnp.int32)


def _check(kw, q, k, v, block_q, block_k, grads=True, interpret=None):
    out, lse = flash_attention(q, k, v, block_q=block_q, block_k=block_k, return_lse=True, interpret=interpret, **kw)
    ref, ref_lse = attention_reference(q, k, v, return_lse=True, **kw)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(lse, ref_lse, atol=1e-5, rtol=0)
    if not grads:
        return
    r = np.random.default_rng(1)
    w_out = jnp.asarray(r.normal(size=out.shape), jnp.float32)
    w_lse = jnp.asarray(r.normal(size=lse.shape), jnp.float32)

    def loss(fn, **extra):
        def f(q, k, v):
            o, l = fn(q, k, v, return_lse=True, **kw, **extra)
            return jnp.sum(o * w_out) + jnp.sum(jnp.where(l > NO_KEYS / 2, l, 0.0) * w_lse)
        return jax.grad(f, argnums=(0, 1, 2))(q, k, v)

    got = loss(flash_attention, block_q=block_q, block_k=block_k, interpret=interpret)
    want = loss(attention_reference)
    for name, g, w in zip("qkv", got, want):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0, err_msg=f"d{name}")


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (8, 1)], ids=["gqa1", "gqa2", "gqa8"])
def test_values_and_grads(causal, heads):
    """Every (mask, GQA ratio) pair on values; gradients on half of them (interpret mode is slow),
    chosen so that each mask and each ratio has its gradients checked."""
    N, K = heads
    q, k, v = _qkv(2, 37, 37, N, K, 16)
    grads = (causal, N // K) in ((True, 1), (False, 2), (True, 8))
    _check(dict(causal=causal), q, k, v, block_q=16, block_k=8, grads=grads)


@pytest.mark.parametrize("blocks", [(8, 8), (16, 32), (64, 64)])
def test_block_sizes(blocks):
    q, k, v = _qkv(1, 45, 45, 4, 2, 8, seed=2)
    _check(dict(causal=True), q, k, v, *blocks, grads=blocks == (8, 8))


def test_packed_segments():
    q, k, v = _qkv(2, 40, 40, 4, 2, 8, seed=3)
    seg = _packed_ids(2, 40, seed=4)
    _check(dict(causal=True, segment_ids=seg), q, k, v, block_q=8, block_k=16)


def test_prefill_against_cache_offset():
    """Queries are the last 13 of 29 keys (bottom-right causal), and per-row offsets with a padded key."""
    q, k, v = _qkv(2, 13, 29, 4, 2, 8, seed=5)
    _check(dict(causal=True), q, k, v, block_q=8, block_k=8)
    kv_ids = jnp.ones((2, 29), jnp.int32).at[1, 3].set(-1)  # row 1: slot 3 is invisible (padding)
    _check(dict(causal=True, q_positions=jnp.array([5, 16]), segment_ids=jnp.ones((2, 13), jnp.int32),
                kv_segment_ids=kv_ids), q, k, v, block_q=8, block_k=8)


def test_scale_and_unseen_rows():
    """A per-call logit scale; a query that sees no key gives 0 and lse NO_KEYS, as the reference does."""
    q, k, v = _qkv(1, 16, 16, 2, 1, 8, seed=6)
    out, lse = flash_attention(q, k, v, q_positions=jnp.arange(16)[None] - 4, scale=0.3, block_q=8, block_k=8,
                               return_lse=True)
    ref, ref_lse = attention_reference(q, k, v, q_positions=jnp.arange(16)[None] - 4, scale=0.3, return_lse=True)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    assert np.all(np.asarray(out[0, :4]) == 0) and np.all(np.asarray(lse[0, :4]) == NO_KEYS)
    np.testing.assert_allclose(lse[0, 4:], ref_lse[0, 4:], atol=1e-5, rtol=0)


def test_bad_input_is_named():
    q, k, v = _qkv(1, 8, 8, 3, 2, 8)
    with pytest.raises(ValueError, match="multiple of KV heads"):
        flash_attention(q, k, v)
    q, k, v = _qkv(1, 8, 8, 4, 2, 8)
    with pytest.raises(ValueError, match="block_q"):
        flash_attention(q, k, v, block_q=12)
    with pytest.raises(ValueError, match="segment_ids must be"):
        flash_attention(q, k, v, segment_ids=jnp.zeros((1, 7), jnp.int32))


@pytest.mark.parametrize("T", [2048, 3000, 4096, 8192, 12288, 32768, 131072])
def test_default_blocks_skip_to_within_1_1x_of_causal(T):
    """The default blocks follow the length so that the causal forward visits at most 1.1x the
    exact causal pairs (the issue's goal) from 2,048 up, and obey Mosaic's rule (multiples of 128)."""
    from qwen3_jax.ops import flash_common as fc
    from qwen3_jax.ops.flash_attention import _static_visits

    d = fc.make_dims((1, T, 8, 128), (1, T, 8, 128), (1, T, 8, 128), None, None)
    assert d.bq % 128 == 0 and d.bk % 128 == 0 and 128 <= d.bq <= 512
    visited_pairs = _static_visits(d, None, None, causal=True, segmented=False) * d.bq * d.bk
    assert visited_pairs / (T * (T + 1) / 2) < 1.1, (T, d.bq)


def test_default_blocks_odd_length():
    """Default blocks on a length that is not a multiple of them (300 -> blocks of 128, padded tail)."""
    q, k, v = _qkv(1, 300, 300, 2, 1, 8, seed=7)
    _check(dict(causal=True), q, k, v, block_q=None, block_k=None, grads=False)


@pytest.mark.slow  # the TPU interpreter simulates memory spaces and DMAs: ~3x slower than plain interpret mode
def test_tpu_interpret_params():
    """The kernels also run under Pallas' TPU interpreter (`pltpu.InterpretParams`), which models
    the TPU's memory spaces and copies rather than running the body as plain XLA."""
    from jax.experimental.pallas import tpu as pltpu

    q, k, v = _qkv(1, 21, 21, 4, 2, 8, seed=8)
    _check(dict(causal=True), q, k, v, block_q=8, block_k=8, interpret=pltpu.InterpretParams())
