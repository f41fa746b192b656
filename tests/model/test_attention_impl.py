"""attention_impl: "flash" (Pallas kernels, interpret mode on CPU) gives the model's "xla" results."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.generate.engine import generate
from qwen3_jax.generate.forward import Split, Stacked
from qwen3_jax.model.attention_impl import resolve


def _model(impl):
    """tiny-dense with a small vocabulary (the LM head's gradient dominates the time otherwise)."""
    cfg = qwen3_jax.get_preset("tiny-dense").replace(vocab_size=1000)
    return qwen3_jax.Model(cfg, qwen3_jax.init_params(cfg, 0, jnp.float32), attention_impl=impl)


def _ids(B, T, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 1000, (B, T)), jnp.int32)


def test_logits_and_grads_match_xla():
    """No cache: a padded row and packed segments; logits and parameter gradients."""
    xla, flash = _model("xla"), _model("flash")
    assert flash.module.attention_impl == "flash" and xla.module.attention_impl == "xla"
    B, T = 2, 19
    ids = _ids(B, T)
    mask = jnp.ones((B, T), jnp.int32).at[1, 15:].set(0)
    seg = jnp.asarray([[0] * 7 + [1] * 12, [0] * 19], jnp.int32)

    def loss(module, params):
        out = module.apply({"params": params}, ids, attention_mask=mask, segment_ids=seg)
        w = jnp.where(mask[..., None] > 0, 1.0, 0.0)  # padded rows differ by design (no key to see)
        return jnp.sum(jax.nn.log_softmax(out.logits) * w * jnp.linspace(-1, 1, out.logits.shape[-1])), out.logits

    (l_x, logits_x), g_x = jax.value_and_grad(loss, argnums=1, has_aux=True)(xla.module, xla.params)
    (l_f, logits_f), g_f = jax.value_and_grad(loss, argnums=1, has_aux=True)(flash.module, xla.params)
    real = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(logits_f)[real], np.asarray(logits_x)[real], atol=1e-4, rtol=0)
    for a, b in zip(jax.tree.leaves(g_f), jax.tree.leaves(g_x)):
        np.testing.assert_allclose(a, b, atol=1e-4 * max(1.0, float(np.abs(b).max())), rtol=0)


@pytest.mark.parametrize("layout", ["stacked", "split"])
def test_cached_prefill_and_decode_match_xla(layout):
    """A prefill of 6 tokens into 8 slots (the chunk-against-cache path), one whose prompt fills the
    cache (the whole-cache path), then a decode step (the decode kernel)."""
    logits = {}
    for impl in ("xla", "flash"):
        model = _model(impl)
        fwd = (Stacked if layout == "stacked" else Split)(model.module)
        params = fwd.prepare(model.params)
        B, T, S = 2, 6, 8
        ids = _ids(B, S + 1, seed=1)
        valid = jnp.asarray([[1] * S, [0] * 2 + [1] * (S - 2)], bool)  # row 1 left-padded

        @jax.jit
        def run(p):
            pre = fwd.apply(p, ids[:, :T], valid.at[:, T:].set(False), fwd.init_cache(B, S),
                            jnp.zeros((B,), jnp.int32), None)
            step = fwd.apply(p, ids[:, T:T + 1], valid.at[:, T + 1:].set(False), pre.cache,
                             jnp.full((B,), T, jnp.int32), None)
            full = fwd.apply(p, ids[:, :S], valid, fwd.init_cache(B, S), jnp.zeros((B,), jnp.int32), None)
            return pre.logits, step.logits, full.logits

        logits[impl] = run(params)
    for got, want in zip(logits["flash"], logits["xla"]):
        got, want = np.asarray(got), np.asarray(want)
        np.testing.assert_allclose(got[0], want[0], atol=1e-4, rtol=0)
        np.testing.assert_allclose(got[1, 2:], want[1, 2:], atol=1e-4, rtol=0)  # padded rows aside


def test_greedy_generation_matches_xla():
    prompts = [[5, 17, 99, 3], [42, 7]]
    out = {}
    for impl in ("xla", "flash"):
        model = qwen3_jax.load("tiny-dense", attention_impl=impl)
        out[impl] = generate(model, prompts, max_new_tokens=6, stop_tokens=[])
    assert out["flash"] == out["xla"]


def _fake_mesh(platform, **axes):
    dev = types.SimpleNamespace(platform=platform)
    return types.SimpleNamespace(devices=np.array([dev] * int(np.prod(list(axes.values()) or [1]))), shape=axes)


def test_auto_resolution_and_errors():
    assert resolve("auto") == ("xla", "cpu")
    assert resolve("auto", _fake_mesh("tpu", data=4)) == ("flash", "tpu")
    assert resolve("auto", _fake_mesh("gpu", data=2)) == ("flash", "gpu")
    assert resolve("auto", _fake_mesh("tpu", data=2, sequence=2))[0] == "ring"
    assert resolve("auto", _fake_mesh("cpu", sequence=4)) == ("ring", "cpu")
    assert resolve("flash", _fake_mesh("cpu", data=8)) == ("flash", "cpu")
    # Dual Chunk Attention has no ring form: "auto" keeps to one sequence shard, "ring" is refused
    assert resolve("auto", _fake_mesh("tpu", sequence=2), dual_chunk=True) == ("flash", "tpu")
    assert resolve("auto", _fake_mesh("cpu", sequence=4), dual_chunk=True) == ("xla", "cpu")
    with pytest.raises(ValueError, match="attention_impl='ring' does not support dual_chunk_attention_config"):
        resolve("ring", _fake_mesh("tpu", sequence=2), dual_chunk=True)
    with pytest.raises(ValueError, match="attention_impl"):
        qwen3_jax.load("tiny-dense", attention_impl="fast")
