"""Platform choices follow the devices compiled for (the context mesh), not the host's backend.

Compiled from this CPU host for a TPU slice, "auto" must pick the TPU paths: the ragged grouped
matmul and the ragged all-to-all; on a CPU mesh (or with no mesh) the CPU paths.
"""

import sys

import jax
import jax.numpy as jnp
import pytest

import qwen3_jax
from qwen3_jax.ops import expert_parallel as ep_ops
from qwen3_jax.ops import moe as moe_ops
from qwen3_jax.sharding.platform import target_platform

# libtpu (in the test extra) ships for Linux only; elsewhere a missing libtpu fails the compile
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libtpu ships for Linux only")


def _tpu_mesh():
    from qwen3_jax.plan.topology import parse_slice

    return qwen3_jax.make_mesh("expert=4", devices=parse_slice("v5p-8").devices())


def test_no_mesh_uses_default_backend():
    assert target_platform() == jax.default_backend() == "cpu"
    assert moe_ops.resolve_impl("auto") == "tiled" and ep_ops.resolve_dispatch("auto") == "fixed"


def test_tpu_mesh_picks_tpu_paths_also_while_tracing():
    mesh = _tpu_mesh()
    seen = {}

    def f(x):
        seen["impl"], seen["dispatch"], seen["platform"] = (moe_ops.resolve_impl("auto"),
                                                            ep_ops.resolve_dispatch("auto"), target_platform())
        return x * 2

    with jax.set_mesh(mesh):
        assert target_platform() == "tpu"
        jax.jit(f).trace(jax.ShapeDtypeStruct((4,), jnp.float32))
    assert seen == {"impl": "ragged", "dispatch": "ragged", "platform": "tpu"}
    assert moe_ops.resolve_impl("tiled") == "tiled"  # an explicit choice is kept


def test_v6e_mesh_picks_the_fixed_dispatch():
    """libtpu rejects ragged-all-to-all for v6e; the grouped matmul stays ragged_dot there."""
    from qwen3_jax.plan.topology import parse_slice

    mesh = qwen3_jax.make_mesh("expert=4", devices=parse_slice("v6e-8").devices()[:4])
    with jax.set_mesh(mesh):
        assert ep_ops.resolve_dispatch("auto") == "fixed" and moe_ops.resolve_impl("auto") == "ragged"
        assert ep_ops.resolve_dispatch("ragged") == "ragged"  # an explicit choice is kept


def test_cpu_mesh_picks_cpu_paths():
    with jax.set_mesh(qwen3_jax.make_mesh("expert=4", devices=jax.devices()[:4])):
        assert moe_ops.resolve_impl("auto") == "tiled" and ep_ops.resolve_dispatch("auto") == "fixed"


def test_engine_layout_follows_the_model_mesh():
    from qwen3_jax.api import Model
    from qwen3_jax.generate.engine import Engine
    from qwen3_jax.plan.steps import sharded_abstract_params

    cfg = qwen3_jax.presets.get_preset("tiny-moe")
    mesh = _tpu_mesh()
    model = Model(cfg, sharded_abstract_params(cfg, mesh, jnp.bfloat16), dtype=jnp.bfloat16, mesh=mesh)
    assert type(Engine(model).fwd).__name__ == "Stacked"
    cpu_model = Model(cfg, None, mesh=None)
    assert type(Engine(cpu_model).fwd).__name__ == "Split"


def test_flash_attention_compiles_mosaic_for_a_tpu_mesh():
    from qwen3_jax.ops import flash_attention

    assert flash_attention._interpret(None) is True  # CPU host, no mesh: interpret mode
    with jax.set_mesh(_tpu_mesh()):
        assert flash_attention._interpret(None) is False
    assert flash_attention._interpret(True) is True


def test_block_attention_picks_the_flash_kernel_for_a_tpu_mesh():
    from qwen3_jax.ops.block_attention import attention_with_lse, default_block_fn, sharded_flash_block

    assert default_block_fn() is attention_with_lse
    with jax.set_mesh(_tpu_mesh()):  # the kernel, per shard of the mesh (Mosaic cannot be partitioned)
        assert default_block_fn() is sharded_flash_block
