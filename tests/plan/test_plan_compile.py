"""The tiny presets' real train and serve steps compile for a 4-chip v5p slice (v5p:2x2x1) under
data, fsdp, tensor and expert meshes; under an expert mesh the MoE exchanges tokens with
all-to-all and never gathers expert weights."""

import sys

import jax.numpy as jnp
import pytest

from qwen3_jax.plan import hlo
from qwen3_jax.plan.compile import plan_one
from qwen3_jax.plan.topology import parse_slice
from qwen3_jax.presets import get_preset

# libtpu (in the test extra) ships for Linux only; elsewhere a missing libtpu fails the compile
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libtpu ships for Linux only")
SLICE = parse_slice("v5p:2x2x1")


@pytest.fixture(scope="module")
def devices():
    return SLICE.devices()


def _check(r, task):
    assert r["chips"] == 4 and "error" not in r, r.get("error")
    assert r["fits"] and r["hbm_bytes_per_chip"] == 95 * 10**9
    b = r["bytes_per_chip"]
    parts = ("params", "optimizer_state", "kv_cache", "activations_temporaries", "other")
    assert b["total"] == sum(b[k] for k in parts) and b["params"] > 0 and b["activations_temporaries"] > 0
    if task == "train":
        assert b["optimizer_state"] >= 2 * b["params"] - 16  # two float32 AdamW moments (+ a step count)
        assert [p["name"] for p in r["programs"]] == ["train_step"]
    else:
        assert b["optimizer_state"] == 0
        assert [p["name"] for p in r["programs"]] == ["prefill", "decode"]
        assert r["programs"][1]["bytes_per_chip"]["kv_cache"] > 0
    assert r["model_flops_per_step"] > 0 and r["compile_seconds"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("model, mesh", [("tiny-dense", {"data": 4}), ("tiny-dense", {"fsdp": 4}),
                                         ("tiny-dense", {"fsdp": 2, "tensor": 2}), ("tiny-moe", {"expert": 4})])
@pytest.mark.parametrize("task", ["train", "serve"])
def test_steps_compile(model, mesh, task, devices):
    r = plan_one(get_preset(model), SLICE, mesh, task, seq=128, batch=8, microbatches=2 if task == "train" else 1,
                 new_tokens=64, devices=devices, keep_hlo=True)
    _check(r, task)
    assert r["mesh"] == mesh
    # "auto" attention on a TPU slice is the Pallas flash kernels, compiled by Mosaic into every program
    assert r["attention_impl"] == "flash"
    assert all("tpu_custom_call" in p["_hlo"] for p in r["programs"]), [p["name"] for p in r["programs"]]
    if "data" in mesh and task == "train":  # data parallel: gradients are all-reduced
        assert r["collectives"]["all-reduce"]["bytes"] > 0
    if "fsdp" in mesh:  # FSDP gathers weight shards
        assert r["collectives"]["all-gather"]["executed"] > 0


def test_expert_mesh_exchanges_tokens_and_keeps_experts_in_place(devices):
    cfg = get_preset("tiny-moe")
    from qwen3_jax.plan import steps
    from qwen3_jax.sharding.mesh import make_mesh

    mesh = make_mesh({"expert": 4}, devices=devices)
    prog = steps.train_program(cfg, mesh, batch=8, seq=128, microbatches=1)[0]
    text = prog.lower().compile().as_text()
    ops = hlo.collectives(text)["ops"]
    assert ops["ragged-all-to-all"]["executed"] >= 4 * cfg.num_hidden_layers  # dispatch + return, fwd + bwd
    E, D, F = cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size
    assert hlo.all_gathers_of(text, (E, D, F)) == [] and hlo.all_gathers_of(text, (E, F, D)) == []
    # the check can fail: the same weights under a plain data mesh are all-reduced in full
    assert prog.parts["params"]["layers"]["mlp"]["experts"]["gate_proj"].sharding.spec[1] == "expert"
    assert jnp.dtype(prog.parts["params"]["layers"]["mlp"]["experts"]["gate_proj"].dtype) == jnp.float32


def test_meshes_may_split_the_torus_axes():
    from qwen3_jax.plan.compile import _split_mesh
    from qwen3_jax.sharding.mesh import make_mesh

    devices = parse_slice("v5p-128").devices()  # 4x4x4 chips
    with pytest.raises(NotImplementedError):  # jax.make_mesh cannot place an axis of 8 on a 4x4x4 torus
        make_mesh({"fsdp": 8, "expert": 4, "tensor": 2}, devices=devices)
    mesh = _split_mesh({"tensor": 2, "fsdp": 8, "expert": 4}, devices)
    assert dict(mesh.shape) == {"fsdp": 8, "expert": 4, "tensor": 2}
    assert len(set(mesh.devices.flat)) == 64
