"""The engine's split forward (per-layer 2-D matrices, fused and transposed) computes the model's logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.generate.forward import Split, Stacked


@pytest.mark.parametrize("preset", ["tiny-moe", "tiny-dense"])  # untied head + MoE; tied head + dense MLP
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_split_matches_stacked(preset, dtype, tol):
    model = qwen3_jax.load(preset, dtype)
    B, T = 2, 7
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 150_000, (B, T)), jnp.int32)
    mask = jnp.asarray([[1] * T, [1] * 5 + [0] * 2], bool)
    write_at = jnp.zeros((B,), jnp.int32)
    split = Split(model.module, fuse=True)
    assert split.transposed == (dtype == "bfloat16")  # "auto"
    results = []
    for fwd in (Stacked(model.module), split):
        params = fwd.prepare(model.params)
        out = jax.jit(lambda p: fwd.apply(p, ids, mask, fwd.init_cache(B, T), write_at, jnp.asarray([6, 4])))(params)
        assert out.logits.shape == (B, 1, model.config.vocab_size)
        results.append((params, out))
    (_, ref), (params, got) = results
    np.testing.assert_allclose(np.asarray(got.logits, np.float32), np.asarray(ref.logits, np.float32),
                               atol=tol * float(np.abs(np.asarray(ref.logits, np.float32)).max()))
    # the same keys and values land in the same cache slots
    for name in ("k", "v"):
        stacked = np.asarray(ref.cache["layers"][name][0], np.float32)
        layer0 = np.asarray(got.cache["layers"][0][name], np.float32)
        np.testing.assert_allclose(layer0, stacked, atol=tol * max(1.0, float(np.abs(stacked).max())))
    # q/k/v are one matrix; a dense MLP's gate/up another
    c = model.config
    attn = params["layers"][0]["self_attn"]
    fused = attn["q_proj"]["w_t" if split.transposed else "w"]
    qkv = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim
    assert fused.shape == ((qkv, c.hidden_size) if split.transposed else (c.hidden_size, qkv))
    assert attn["k_proj"] == {} and attn["v_proj"] == {}
    if preset == "tiny-dense":
        assert params["layers"][0]["mlp"]["up_proj"] == {}


def test_cache_layout():
    """Keys [B, K, S, H] and values [B, K, H, S]: each row's new entries land at its write slot."""
    model = qwen3_jax.load("tiny-dense")
    c = model.config
    fwd = Stacked(model.module)
    cache = fwd.init_cache(2, 8)
    K, H = c.num_key_value_heads, c.head_dim
    assert cache["layers"]["k"].shape == (c.num_hidden_layers, 2, K, 8, H)
    assert cache["layers"]["v"].shape == (c.num_hidden_layers, 2, K, H, 8)
    ids = jnp.asarray([[5], [9]], jnp.int32)
    write_at = jnp.asarray([3, 6], jnp.int32)
    mask = jnp.arange(8)[None, :] <= write_at[:, None]
    out = fwd.apply(model.params, ids, mask, cache, write_at, None)
    k, v = np.asarray(out.cache["layers"]["k"]), np.asarray(out.cache["layers"]["v"])
    for b, at in enumerate([3, 6]):
        written = np.zeros(8, bool)
        written[at] = True
        assert np.abs(k[:, b, :, written, :]).sum() > 0 and np.abs(k[:, b, :, ~written, :]).sum() == 0
        assert np.abs(v[:, b, :, :, written]).sum() > 0 and np.abs(v[:, b, :, :, ~written]).sum() == 0


def test_split_rejects_bad_orientation():
    model = qwen3_jax.load("tiny-dense")
    with pytest.raises(ValueError, match="transposed"):
        Split(model.module, transposed="yes")
