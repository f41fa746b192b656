"""The model's Pallas attention compiles for a multi-chip TPU mesh (v5p-8, four chips, ahead of time).

XLA cannot partition a Mosaic kernel: without a `shard_map` around the kernel calls, lowering the
model with "flash" (what "auto" picks on TPU) or a Dual Chunk Attention model on a `data=4` mesh
failed with "Mosaic kernels cannot be automatically partitioned". Here the tiny models' forward
(and a gradient), a DCA prefill and the engine's prefill and decode with "flash" are compiled by
libtpu in a subprocess (`aot.run_isolated`), and the kernels are checked to run on each device's
shard (local batch and KV heads), not on the global arrays.
"""

import sys

import pytest

from qwen3_jax.aot import run_isolated

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libtpu ships for Linux only")

# tiny-dense: 4 query heads over 2 KV heads (G = 2), head_dim 32; batch 4, length 256
CASES = {  # name -> (mesh axes, attention_impl, DCA, local q block of the forward kernel [B, K, G, T, H])
    "dense data=4": ({"data": 4}, "auto", False, "1x2x2x256x32"),
    "dense fsdp=4": ({"fsdp": 4}, "auto", False, "1x2x2x256x32"),
    "dense data=2,tensor=2": ({"data": 2, "tensor": 2}, "auto", False, "2x1x2x256x32"),
    "dca data=4": ({"data": 4}, "auto", True, None),
    "dca data=2,tensor=2": ({"data": 2, "tensor": 2}, "xla", True, None),
}

_CODE = r'''
import json, re, sys
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import qwen3_jax
from qwen3_jax.aot import tpu_mesh
from qwen3_jax.api import Model
from qwen3_jax.plan.steps import serve_programs, sharded_abstract_params
from qwen3_jax.sharding.placement import mesh_context

CASES = json.loads(sys.argv[1])
base = qwen3_jax.get_preset("tiny-dense").replace(vocab_size=1024)
dca = base.replace(dual_chunk_attention_config={"chunk_size": 128, "local_size": 32})


def kernels(lowered):
    """The operand types of every Mosaic call in the lowered program."""
    return [re.findall(r"tensor<([0-9x]+)x(?:bf16|f32|i32)>", ln.split(" : (", 1)[1].split(") ->")[0])
            for ln in lowered.as_text().splitlines() if "@tpu_custom_call" in ln]


out = {}
for name, (axes, impl, use_dca, _) in CASES.items():
    cfg = dca if use_dca else base
    mesh = tpu_mesh(axes, topology="v5p-8")
    params = sharded_abstract_params(cfg, mesh, jnp.bfloat16)
    m = Model(cfg, params, dtype=jnp.bfloat16, mesh=mesh, attention_impl=impl)
    ids = jax.ShapeDtypeStruct((4, 256), jnp.int32, sharding=NamedSharding(mesh, P()))
    with mesh_context(cfg, mesh):
        lowered = m._forward.lower(params, ids, None, None)
        lowered.compile()
    out[name] = {"impl": m.attention_impl, "kernels": kernels(lowered)}

# training: the backward kernels under the same shard_map
cfg, mesh = base, tpu_mesh({"data": 2, "tensor": 2}, topology="v5p-8")
params = sharded_abstract_params(cfg, mesh, jnp.bfloat16)
m = Model(cfg, params, dtype=jnp.bfloat16, mesh=mesh, attention_impl="auto")
ids = jax.ShapeDtypeStruct((4, 256), jnp.int32, sharding=NamedSharding(mesh, P()))
loss = lambda p, x: jnp.mean(m.module.apply({"params": p}, x).logits.astype(jnp.float32) ** 2)
with mesh_context(cfg, mesh):
    lowered = jax.jit(jax.grad(loss)).lower(params, ids)
    lowered.compile()
out["grad data=2,tensor=2"] = {"impl": m.attention_impl, "kernels": kernels(lowered)}

# the engine with "flash": prefill (compiled inside serve_programs) and the decode loop
prefill, decode = serve_programs(base, tpu_mesh({"data": 4}, topology="v5p-8"), batch=4, seq=128, new_tokens=16,
                                 attention_impl="flash")
error = getattr(prefill, "compile_error", None)
lowered = decode.lower()
lowered.compile()
out["engine data=4"] = {"prefill_error": None if error is None else repr(error)[:500],
                        "prefill_kernels": kernels(prefill.lowered), "decode_kernels": kernels(lowered)}
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def compiled():
    import json

    return run_isolated(_CODE.replace("sys.argv[1]", repr(json.dumps(CASES))), timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_model_forward_compiles_on_a_tpu_mesh(compiled, name):
    axes, impl, use_dca, local_q = CASES[name]
    r = compiled[name]
    # "auto" is flash on TPU; a DCA model's prefill runs on the kernel whatever the choice
    assert r["impl"] == ("xla" if impl == "xla" else "flash"), r["impl"]
    assert r["kernels"], f"{name}: no Mosaic kernel in the program"
    if local_q is not None:  # each chip runs the kernel on its own rows and KV heads
        assert all(k[2] == local_q for k in r["kernels"]), (name, r["kernels"])
    else:  # DCA blocks of one chunk (s = 96) of the local rows: batch 4 over data
        rows = 4 // axes["data"]
        assert all(k[2].startswith(f"{rows}x") for k in r["kernels"]), (name, r["kernels"])


@pytest.mark.slow
def test_gradient_compiles_on_a_tpu_mesh(compiled):
    kernels = compiled["grad data=2,tensor=2"]["kernels"]
    # the forward, dq and dk/dv kernels (in the layers' scan body), all on [2 rows, 1 KV head] shards
    assert len(kernels) >= 3, kernels
    assert all(any(t.startswith("2x1x") for t in k) for k in kernels), kernels


@pytest.mark.slow
def test_engine_prefill_and_decode_compile_with_flash(compiled):
    r = compiled["engine data=4"]
    assert r["prefill_error"] is None, r["prefill_error"]
    assert r["prefill_kernels"] and r["decode_kernels"], r
    # the decode kernel reads one row's cache: keys [1, K, S, H] on each chip
    assert any(t.startswith("1x2x") and t.endswith("x32") for k in r["decode_kernels"] for t in k), r["decode_kernels"]
