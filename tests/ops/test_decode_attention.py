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
