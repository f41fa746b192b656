"""The whole model with ring attention on a `sequence=4` mesh against one device: logits and grads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.model.transformer import Qwen3
from qwen3_jax.ops.ring_attention import from_zigzag, to_zigzag
from qwen3_jax.sharding.mesh import make_mesh
from qwen3_jax.sharding.placement import mesh_context, shard_params
from qwen3_jax.testing import SMALL_DENSE

CFG = qwen3_jax.Qwen3Config(**{**SMALL_DENSE, "num_hidden_layers": 2})
B, T = 2, 32
IDS = jax.random.randint(jax.random.key(1), (B, T), 0, CFG.vocab_size)
TARGET = jax.random.normal(jax.random.key(2), (B, T, CFG.vocab_size))
# Row 0 packs two documents (positions restart), row 1 is one document.
SEG = jnp.asarray(np.stack([np.repeat([1, 2], [11, 21]), np.ones(T, int)]), jnp.int32)
POS = jnp.asarray(np.stack([np.r_[np.arange(11), np.arange(21)], np.arange(T)]), jnp.int32)


def _run(module, params, mesh, ids, target, **kw):
    def loss(p):
        logits = module.apply({"params": p}, ids, **kw).logits
        return jnp.mean(logits * target), logits

    if mesh is not None:
        params = shard_params(params, CFG, mesh)
    with mesh_context(CFG, mesh):
        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return logits, grads


@pytest.fixture(scope="module")
def params():
    return qwen3_jax.init_params(CFG, seed=0)


@pytest.mark.parametrize("layout,packed", [("contiguous", False), ("zigzag", False), ("zigzag", True)])
def test_ring_model_equals_one_device(params, layout, packed):
    kw = dict(segment_ids=SEG, positions=POS) if packed else {}
    ref_logits, ref_grads = _run(Qwen3(CFG), params, None, IDS, TARGET, **kw)
    mesh = make_mesh("sequence=4", jax.devices()[:4])
    perm = (lambda x: to_zigzag(x, 4)) if layout == "zigzag" else (lambda x: x)
    unperm = (lambda x: from_zigzag(x, 4)) if layout == "zigzag" else (lambda x: x)
    module = Qwen3(CFG, attention_impl="ring", ring_layout=layout)
    logits, grads = _run(module, params, mesh, perm(IDS), perm(TARGET), **{k: perm(v) for k, v in kw.items()})
    np.testing.assert_allclose(unperm(logits), ref_logits, atol=2e-5)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4), grads, ref_grads)


def test_ring_is_refused_with_dual_chunk_attention(params):
    cfg = CFG.replace(dual_chunk_attention_config={"chunk_size": 16, "local_size": 4})
    with pytest.raises(ValueError, match="ring.*dual_chunk"):
        Qwen3(cfg, attention_impl="ring").apply({"params": params}, IDS)
    mesh = make_mesh("sequence=4", jax.devices()[:4])
    with pytest.raises(ValueError, match="attention_impl='ring' does not support dual_chunk_attention_config"):
        qwen3_jax.Model(cfg, params, mesh=mesh, attention_impl="ring")
    # "auto" on a sequence mesh does not pick ring for a DCA model: it runs, with one device's logits
    auto = qwen3_jax.Model(cfg, shard_params(params, cfg, mesh), mesh=mesh, attention_impl="auto")
    assert auto.attention_impl == "xla"
    np.testing.assert_allclose(auto.logits(IDS), qwen3_jax.Model(cfg, params).logits(IDS), atol=2e-5)
    with pytest.raises(ValueError, match="unknown attention_impl 'pallas'"):
        Qwen3(CFG, attention_impl="pallas").apply({"params": params}, IDS)
