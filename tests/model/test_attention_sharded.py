"""The model's attention kernels on a CPU mesh (interpret mode) give the one-device results.

On a mesh the Pallas kernels run inside a `shard_map` over the batch axes and `tensor` on the
heads (`ops.kernel_sharding`; on TPU they must, see tests/ops/test_attention_sharded_tpu.py). Here
the same wrapping runs on 8 CPU devices: the flash model's logits and gradients, its greedy
generation (prefill and decode kernels) and a Dual Chunk Attention model's logits equal those of
the model on one device with plain XLA attention.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.config import Qwen3Config
from qwen3_jax.generate.engine import generate
from qwen3_jax.sharding.mesh import make_mesh
from qwen3_jax.sharding.placement import mesh_context, shard_params
from qwen3_jax.testing import SMALL_DENSE

CFG = Qwen3Config(**{**SMALL_DENSE, "num_hidden_layers": 2})  # 4 query heads over 2 KV heads
B, T = 4, 24
IDS = jax.random.randint(jax.random.key(1), (B, T), 0, CFG.vocab_size)
pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")


@pytest.fixture(scope="module")
def params():
    return qwen3_jax.init_params(CFG, seed=0)


def _logits_and_grads(module, params, mesh, cfg=CFG):
    def loss(p):
        logits = module.apply({"params": p}, IDS).logits
        return jnp.mean(jnp.sin(logits)), logits

    if mesh is not None:
        params = shard_params(params, cfg, mesh)
    with mesh_context(cfg, mesh):
        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return logits, grads


# data=2,tensor=2 splits rows and KV heads; tensor=4 exceeds the 2 KV heads (replicated) and
# data=8 exceeds the 4 rows (replicated), with the other axes idle
@pytest.mark.parametrize("spec", ["data=2,tensor=2,fsdp=2", "fsdp=2,tensor=4", "data=8"])
def test_flash_on_a_mesh_equals_one_device(params, spec):
    from qwen3_jax.model.transformer import Qwen3

    ref_logits, ref_grads = _logits_and_grads(Qwen3(CFG), params, None)
    mesh = make_mesh(spec, jax.devices()[:8])
    logits, grads = _logits_and_grads(Qwen3(CFG, attention_impl="flash", attention_platform="cpu"), params, mesh)
    np.testing.assert_allclose(logits, ref_logits, atol=2e-5)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4), grads, ref_grads)


def test_flash_generation_on_a_mesh_equals_one_device(params):
    prompts = [[5, 17, 99, 3], [42, 7], [1, 2, 3, 4, 5, 6], [9]]
    want = generate(qwen3_jax.Model(CFG, params), prompts, max_new_tokens=5, stop_tokens=[])
    mesh = make_mesh("data=2,tensor=2", jax.devices()[:4])
    model = qwen3_jax.Model(CFG, shard_params(params, CFG, mesh), mesh=mesh, attention_impl="flash")
    assert generate(model, prompts, max_new_tokens=5, stop_tokens=[]) == want


def test_dual_chunk_on_a_mesh_equals_one_device(params):
    cfg = CFG.replace(dual_chunk_attention_config={"chunk_size": 16, "local_size": 4})  # s = 12: 2 chunks
    want = qwen3_jax.Model(cfg, params).logits(IDS)
    mesh = make_mesh("data=2,tensor=2", jax.devices()[:4])
    got = qwen3_jax.Model(cfg, shard_params(params, cfg, mesh), mesh=mesh, attention_impl="flash").logits(IDS)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_shard_kernel_errors_name_the_bad_value():
    from qwen3_jax.ops.kernel_sharding import shard_kernel

    mesh = make_mesh("data=2", jax.devices()[:2])
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="'BQ'"):
        shard_kernel(lambda a: a, (x,), ("BQ",), "B.", kv_heads=1, mesh=mesh)
    with pytest.raises(ValueError, match=r"shape \(2, 3\) but dimension string 'B'"):
        shard_kernel(lambda a: a, (x,), ("B",), "B.", kv_heads=1, mesh=mesh)
    with pytest.raises(ValueError, match="2 arguments but 1 dimension strings"):
        shard_kernel(lambda a, b: a, (x, x), ("B.",), "B.", kv_heads=1, mesh=mesh)
