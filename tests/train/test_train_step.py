"""The jitted train step: the loss falls, gradient accumulation equals one big batch (dense and
MoE with the global-batch balance loss), bf16 compute keeps float32 master weights, and the step
lowers on abstract inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.train.step import build_train_step

from train_helpers import TINY_MOE, packed_batch, tiny_config


def _mesh1():
    return qwen3_jax.make_mesh("data=1", devices=jax.devices()[:1])


_RUNS = {}


def _accum_run(model, grad_accum, global_counts=True):
    """Three steps on fixed batches, memoised: several tests compare the same runs."""
    key = (model, grad_accum, global_counts)
    if key not in _RUNS:
        mc = TINY_MOE if model == "moe" else None
        cfg = tiny_config(mc, train={"grad_accum": grad_accum, "moe_global_counts": global_counts})
        _RUNS[key] = _run(cfg, [packed_batch(4, 32, 256, seed=s) for s in range(3)])
    return _RUNS[key]


def _run(cfg, batches, mesh=None):
    ts = build_train_step(cfg, mesh or _mesh1())
    state = ts.init_state()
    out = []
    for b in batches:
        state, m = ts(state, ts.place_batch(b))
        out.append(jax.device_get(m))
    return state, out


def test_loss_falls_on_a_repeated_batch():
    cfg = tiny_config(optimizer={"lr": 1e-2})
    b = packed_batch(4, 32, 256, seed=0)
    _, ms = _run(cfg, [b] * 15)
    losses = [float(m["loss"]) for m in ms]
    assert losses[0] == pytest.approx(np.log(256), rel=0.1)  # near uniform at init
    assert losses[-1] < 0.7 * losses[0]
    assert all(np.isfinite(losses)) and float(ms[-1]["grad_norm"]) > 0
    assert float(ms[0]["learning_rate"]) == pytest.approx(0.0)  # warmup starts at 0
    assert float(ms[2]["learning_rate"]) == pytest.approx(1e-2, rel=1e-3)


@pytest.mark.parametrize("model", ["dense", "moe"])
def test_grad_accumulation_equals_one_batch(model):
    mc = model == "moe"
    s1, m1 = _accum_run(model, 1)
    s2, m2 = _accum_run(model, 2)
    for a, b in zip(m1, m2):
        for k in ("loss", "total_loss", "grad_norm") + (("balance_loss",) if mc else ()):
            np.testing.assert_allclose(b[k], a[k], rtol=2e-5, err_msg=k)
    for a, b in zip(jax.tree.leaves(s1["params"]), jax.tree.leaves(s2["params"])):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    if mc:
        np.testing.assert_array_equal(m1[0]["expert_counts"], m2[0]["expert_counts"])
        # The balance loss is the global-batch one: 2 experts of 4 chosen, uniform routing gives 2.
        assert 1.5 < float(m1[0]["balance_loss"]) < 3.0


def test_moe_per_micro_batch_counts_differ_from_global():
    """With moe_global_counts off, each micro-batch balances itself: a different loss."""
    _, g = _accum_run("moe", 2)
    _, m = _accum_run("moe", 2, global_counts=False)
    assert float(m[0]["balance_loss"]) != pytest.approx(float(g[0]["balance_loss"]), rel=1e-6)


def test_bf16_compute_keeps_f32_master_weights():
    cfg = tiny_config(model={"dtype": "bfloat16", "remat": "full"})
    state, ms = _run(cfg, [packed_batch(4, 32, 256, seed=0)] * 3)
    assert {x.dtype for x in jax.tree.leaves(state["params"])} == {jnp.dtype(jnp.float32)}
    assert ms[-1]["loss"] < ms[0]["loss"] and int(state["step"]) == 3


def test_step_lowers_on_abstract_inputs():
    cfg = tiny_config()
    ts = build_train_step(cfg, _mesh1())
    st, batch = ts.abstract_state(), ts.abstract_batch()
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(st))
    text = ts.lower(st, batch).as_text()
    assert "func.func public @main" in text and "stablehlo.dot_general" in text  # the step's program, with its matmuls
