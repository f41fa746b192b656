"""The same training steps on 8 CPU devices (data=2,fsdp=2,tensor=2; MoE with expert=4) give the
losses of one device, and the state is laid out by the rules table."""

import jax
import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.train.step import build_train_step

from train_helpers import TINY_MOE, packed_batch, tiny_config


def _losses(cfg, mesh, n=3):
    ts = build_train_step(cfg, mesh)
    state = ts.init_state()
    out = []
    for s in range(n):
        state, m = ts(state, ts.place_batch(packed_batch(8, 32, 256, seed=s)))
        out.append(jax.device_get(m))
    return ts, state, out


@pytest.mark.parametrize("model,spec", [("dense", "data=2,fsdp=2,tensor=2"),
                                        pytest.param("moe", "data=2,expert=4", marks=pytest.mark.slow)])
def test_eight_devices_equal_one(model, spec):
    cfg = tiny_config(TINY_MOE if model == "moe" else None, train={"batch_size": 8})
    _, _, one = _losses(cfg, qwen3_jax.make_mesh("data=1", devices=jax.devices()[:1]))
    ts, state, many = _losses(cfg, qwen3_jax.make_mesh(spec))
    for a, b in zip(one, many):
        for k in ("loss", "total_loss", "grad_norm") + (("balance_loss",) if model == "moe" else ()):
            np.testing.assert_allclose(b[k], a[k], rtol=2e-5, err_msg=k)
    # The params really are split: a projection over tensor (dense) or the experts over expert (MoE).
    p = state["params"]["layers"]["mlp"]
    if model == "dense":
        assert "tensor" in str(p["gate_proj"]["kernel"].sharding.spec)
        assert "fsdp" in str(p["gate_proj"]["kernel"].sharding.spec)
    else:
        assert "expert" in str(p["experts"]["gate_proj"].sharding.spec)
    mu = jax.tree.leaves(state["opt_state"])  # Adam moments follow their params
    assert any("tensor" in str(x.sharding.spec) or "expert" in str(x.sharding.spec) for x in mu if x.ndim > 1)
