"""Decode attention (Pallas kernel, interpret mode) against the model's plain-XLA cache attention."""

import jax.numpy as jnp
import numpy as np
import pytest

from qwen3_jax.ops.attention import dot_product_attention
from qwen3_jax.ops.decode_attention import decode_attention


def _case(B, S, N, K, H, seed=0):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.normal(size=(B, 1, N, H)), jnp.float32)
    kc = jnp.asarray(r.normal(size=(B, K, S, H)), jnp.float32)
    vc = jnp.asarray(r.normal(size=(B, K, H, S)), jnp.float32)
    return q, kc, vc


@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (8, 1)], ids=["gqa1", "gqa2", "gqa8"])
def test_matches_cache_attention(heads):
    """Rows of different lengths (one left-padded), blocks skipped past each row's end."""
    N, K = heads
    B, S, H = 3, 48, 16
    q, kc, vc = _case(B, S, N, K, H)
    lengths = np.array([5, 30, 48])
    valid = np.arange(S)[None, :] < lengths[:, None]
    valid[1, :4] = False  # left padding
    valid = jnp.asarray(valid)
    got = decode_attention(q, kc, vc, valid, block_k=16, scale=0.3)
    want = dot_product_attention(q, kc, vc, valid[:, None, :], 0.3, "cache")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_extra_kv_and_lse():
    """The step's own key/value outside the cache enter the same softmax (as the model's decode uses it)."""
    B, S, N, K, H = 2, 32, 4, 2, 8
    q, kc, vc = _case(B, S, N, K, H, seed=1)
    r = np.random.default_rng(2)
    k_new = jnp.asarray(r.normal(size=(B, 1, K, H)), jnp.float32)
    v_new = jnp.asarray(r.normal(size=(B, 1, K, H)), jnp.float32)
    valid = jnp.asarray(np.arange(S)[None, :] < np.array([[7], [20]]))
    got, lse = decode_attention(q, kc, vc, valid, block_k=8, extra_kv=(k_new, v_new, jnp.ones((B,), bool)),
                                return_lse=True)
    want = dot_product_attention(q, kc, vc, valid[:, None, :], H ** -0.5, "cache",
                                 (k_new, v_new, jnp.ones((B, 1, 1), bool)))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # lse against a direct computation over the valid keys plus the new one
    qg = np.asarray(q).reshape(B, K, N // K, H)
    s = np.einsum("bkgh,bksh->bkgs", qg, np.asarray(kc)) * H ** -0.5
    s = np.where(np.asarray(valid)[:, None, None], s, -np.inf)
    s_new = np.einsum("bkgh,bkh->bkg", qg, np.asarray(k_new)[:, 0]) * H ** -0.5
    ref = np.logaddexp(np.log(np.exp(s).sum(-1)), s_new).reshape(B, 1, N)
    np.testing.assert_allclose(lse, ref, atol=1e-5, rtol=0)


def test_block_size_and_shape_errors():
    q, kc, vc = _case(1, 40, 4, 2, 8)
    valid = jnp.ones((1, 40), bool)
    want = dot_product_attention(q, kc, vc, valid[:, None, :], 8 ** -0.5, "cache")
    np.testing.assert_allclose(decode_attention(q, kc, vc, valid, block_k=16), want, atol=1e-5, rtol=0)  # bk = 8
    with pytest.raises(ValueError, match="kv_valid"):
        decode_attention(q, kc, vc, valid[:, :39])
    with pytest.raises(ValueError, match="one query per row"):
        decode_attention(jnp.concatenate([q, q], 1), kc, vc, valid)


def test_block_sizes_mosaic_accepts():
    """On TPU the key block is a multiple of 128 or the whole cache (S=1000 once gave 200);
    off TPU a multiple of 8; a length with no such divisor gets a last block running past S."""
    from qwen3_jax.ops.decode_attention import _block_size

    assert _block_size(1000, 512, tpu=True) == 512  # no multiple of 128 divides 1000: ragged tail
    assert _block_size(1000, 512, tpu=False) == 200
    assert _block_size(1000, 1024, tpu=True) == 1000
    assert _block_size(4096, 512, tpu=True) == 512
    assert _block_size(3 * 128 * 5, 512, tpu=True) == 384
    for S in (129, 200, 1000, 1001, 4000, 32768, 40000):
        bk = _block_size(S, 512, tpu=True)
        assert bk == S or bk % 128 == 0, (S, bk)
    with pytest.raises(ValueError, match="block_k=64 .* multiple of 128"):
        _block_size(1000, 64, tpu=True)
    with pytest.raises(ValueError, match="block_k must be a positive multiple of 8, got 12"):
        _block_size(1000, 12, tpu=False)


@pytest.mark.parametrize("S", [44, 45])
def test_last_block_past_the_cache(S):
    """A cache length that no block divides: the last block reads past S and must ignore it, even
    where every slot is valid and the row sees the final slots."""
    from qwen3_jax.ops.decode_attention import _block_size

    assert S % _block_size(S, 16, tpu=False) != 0
    q, kc, vc = _case(2, S, 4, 2, 8, seed=3)
    valid = jnp.asarray(np.arange(S)[None, :] < np.array([[S], [S - 3]]))
    got = decode_attention(q, kc, vc, valid, block_k=16)
    want = dot_product_attention(q, kc, vc, valid[:, None, :], 8 ** -0.5, "cache")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
