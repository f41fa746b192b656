"""The engine's split forward (per-layer 2-D matrices, fused and transposed) computes the model's logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.generate.forward import Split, Stacked


def _close(got, ref, tol):
    got, ref = np.asarray(got, np.float32), np.asarray(ref, np.float32)
    np.testing.assert_allclose(got, ref, atol=tol * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("preset", ["tiny-moe", "tiny-dense"])  # untied head + MoE; tied head + dense MLP
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
@pytest.mark.parametrize("transposed", [True, False])
def test_split_matches_stacked(preset, dtype, tol, transposed):
    """A prefill of 6 slots (row 1 padded), then one decode step: same logits and cache contents."""
    model = qwen3_jax.load(preset, dtype)
    B, T, S = 2, 6, 8
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 150_000, (B, T + 1)), jnp.int32)
    valid = jnp.asarray([[1] * S, [1] * 4 + [0] * 2 + [1] * 2], bool)  # row 1: slots 4, 5 are padding
    split = Split(model.module, transposed=transposed, fuse=True)
    assert Split(model.module).transposed  # the default
    results = []
    for fwd in (Stacked(model.module), split):
        params = fwd.prepare(model.params)

        @jax.jit
        def run(p):
            pre = fwd.apply(p, ids[:, :T], valid.at[:, T:].set(False), fwd.init_cache(B, S), jnp.zeros((B,), jnp.int32),
                            jnp.asarray([5, 3]))
            step = fwd.apply(p, ids[:, T:], valid.at[:, T + 1:].set(False), pre.cache,
                             jnp.full((B,), T, jnp.int32), None)
            return pre, step

        pre, step = run(params)
        assert pre.logits.shape == step.logits.shape == (B, 1, model.config.vocab_size)
        results.append((params, pre, step))
    (_, ref_pre, ref_step), (params, pre, step) = results
    _close(pre.logits, ref_pre.logits, tol)
    _close(step.logits, ref_step.logits, tol)
    # the same keys and values land in the same cache slots (the split cache is float32)
    for name in ("k", "v"):
        assert step.cache["layers"][0][name].dtype == jnp.float32
        for layer in (0, model.config.num_hidden_layers - 1):
            _close(step.cache["layers"][layer][name], ref_step.cache["layers"][name][layer], tol)
    # q/k/v are one matrix; a dense MLP's gate/up another
    c = model.config
    attn = params["layers"]["0"]["self_attn"]
    fused = attn["q_proj"]["w_t" if split.transposed else "w"]
    qkv = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim
    assert fused.shape == ((qkv, c.hidden_size) if split.transposed else (c.hidden_size, qkv))
    assert attn["k_proj"] == {} and attn["v_proj"] == {}
    if preset == "tiny-dense":
        assert params["layers"]["0"]["mlp"]["up_proj"] == {}


def test_split_takes_positions():
    """Both layouts run `Qwen3.__call__`, so explicit RoPE positions reach the split forward too."""
    model = qwen3_jax.load("tiny-dense")
    B, T = 2, 5
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 150_000, (B, T)), jnp.int32)
    valid, at = jnp.ones((B, T), bool), jnp.zeros((B,), jnp.int32)
    shifted = jnp.broadcast_to(3 * jnp.arange(T), (B, T))  # not a uniform shift: RoPE sees offsets only
    got = {}
    for fwd in (Stacked(model.module), Split(model.module, fuse=True)):
        p = fwd.prepare(model.params)
        got[type(fwd).__name__] = [fwd.apply(p, ids, valid, fwd.init_cache(B, T), at, None, positions=pos).logits
                                   for pos in (None, shifted)]
    _close(got["Split"][1], got["Stacked"][1], 1e-5)
    _close(got["Split"][0], got["Stacked"][0], 1e-5)
    assert np.abs(np.asarray(got["Split"][1] - got["Split"][0])).max() > 1e-3  # the positions were used


def test_unrolled_model_matches_scanned():
    """`Qwen3(unrolled=True)` over per-layer params: the scanned model's logits, router logits and hidden states.

    A config mixing dense and MoE layers, so that there are two stacks ("layers_0", "layers_1")."""
    from qwen3_jax.testing import SMALL_MOE

    cfg = qwen3_jax.Qwen3Config(**{**SMALL_MOE, "num_hidden_layers": 4, "mlp_only_layers": (0, 1)})
    model = qwen3_jax.Model(cfg, qwen3_jax.init_params(cfg))
    unrolled = model.module.clone(unrolled=True)
    shapes = jax.eval_shape(unrolled.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
    assert sorted(shapes) == sorted(model.params) and sorted(shapes["layers_1"]) == ["0", "1"]
    params = {k: ({str(i): jax.tree.map(lambda a, i=i: a[i], v) for i in range(2)} if k.startswith("layers") else v)
              for k, v in model.params.items()}
    ids = jnp.asarray(np.random.default_rng(2).integers(0, cfg.vocab_size, (2, 6)), jnp.int32)
    ref = model.module.apply({"params": model.params}, ids, return_hidden=True)
    got = unrolled.apply({"params": params}, ids, return_hidden=True)
    _close(got.logits, ref.logits, 1e-5)
    _close(got.router_logits, ref.router_logits, 1e-5)
    assert len(got.hidden_states) == len(ref.hidden_states) == cfg.num_hidden_layers + 1
    for g, r in zip(got.hidden_states, ref.hidden_states):
        _close(g, r, 1e-5)


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
        Split(model.module, transposed="auto")


def test_attention_with_extra_kv():
    """Decode's attention (cache without the new slot + the new key/value apart) equals attention over all slots."""
    from qwen3_jax.ops.attention import dot_product_attention

    rng = np.random.default_rng(0)
    B, N, K, H, S = 2, 4, 2, 8, 6
    q = jnp.asarray(rng.standard_normal((B, 1, N, H)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((B, S, K, H)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((B, S, K, H)), jnp.float32)
    write_at = jnp.asarray([3, 5])
    mask = (jnp.arange(S)[None, None, :] <= write_at[:, None, None]).at[0, 0, 1].set(False)  # [B, 1, S]
    full = dot_product_attention(q, k, v, mask, 0.3)
    slot = jnp.arange(S) == write_at[:, None, None]
    k_new = jnp.take_along_axis(k, write_at[:, None, None, None], axis=1)
    v_new = jnp.take_along_axis(v, write_at[:, None, None, None], axis=1)
    stale = jnp.where(slot[:, 0, :, None, None], 100.0, k)  # whatever the cache holds at the slot is ignored
    cache_k, cache_v = stale.transpose(0, 2, 1, 3), v.transpose(0, 2, 3, 1)  # the cache layout
    split = dot_product_attention(q, cache_k, cache_v, mask & ~slot, 0.3, "cache", (k_new, v_new, jnp.ones((B, 1, 1), bool)))
    np.testing.assert_allclose(np.asarray(split), np.asarray(full), rtol=1e-5, atol=1e-6)


def test_prefix_attention_matches_full():
    """Block-causal prefill attention (keys cut at each query block's end) equals the full product."""
    from qwen3_jax.ops.attention import causal_mask, dot_product_attention, prefix_attention

    rng = np.random.default_rng(1)
    B, T, N, K, H = 2, 300, 4, 2, 8  # blocks of 128: [0, 128), [128, 256), [256, 300)
    q, k, v = (jnp.asarray(rng.standard_normal((B, T, n, H)), jnp.float32) for n in (N, K, K))
    valid = jnp.asarray(np.arange(T)[None, :] < np.array([[T], [200]]))  # row 1 padded after 200
    mask = causal_mask(jnp.broadcast_to(jnp.arange(T), (B, T)), valid)
    full = np.asarray(dot_product_attention(q, k, v, mask, 0.3))
    got = np.asarray(prefix_attention(q, k, v, mask, 0.3))
    np.testing.assert_allclose(got, full, rtol=1e-5, atol=1e-6)  # every query sees key 0 here
    short = np.asarray(prefix_attention(q[:, :100], k[:, :100], v[:, :100], mask[:, :100, :100], 0.3))
    np.testing.assert_array_equal(short, np.asarray(dot_product_attention(q[:, :100], k[:, :100], v[:, :100],
                                                                          mask[:, :100, :100], 0.3)))


def test_bf16_prefill_options():
    """bf16 prefill compiles with YNNPACK dots on CPU and picks the same first tokens as the default compile."""
    from qwen3_jax.generate import GREEDY, Engine

    assert Split(qwen3_jax.load("tiny-dense").module).prefill_options is None  # float32: the defaults
    model = qwen3_jax.load("tiny-dense", "bfloat16")
    engine = Engine(model, layout="split")
    assert engine.fwd.prefill_options == {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
    prompts = np.random.default_rng(3).integers(0, 150_000, (3, 40)).tolist()
    first = [r[0] for r in engine.start(prompts, max_new_tokens=1, sampling=GREEDY, stop_tokens=[]).tokens()]
    fwd, params = engine.fwd, engine.params
    ids = jnp.asarray(prompts, jnp.int32)
    out = jax.jit(lambda p: fwd.apply(p, ids, jnp.ones((3, 40), bool), fwd.init_cache(3, 40), jnp.zeros((3,), jnp.int32),
                                      jnp.full((3,), 39)))(params)  # default compile options
    assert first == np.asarray(out.logits[:, 0].argmax(-1)).tolist()
