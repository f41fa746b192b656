"""Gradient accumulation on several CPU devices, and the MoE capacity factor of the train config.

* k micro-batches give the step of one big batch (losses, gradient norm, updated params) under
  pure data parallelism (per-device sums, one all-reduce per step) and under data x fsdp;
* under pure data parallelism the gradients' all-reduce runs once per step, not once per
  micro-batch (counted in the compiled program, loop trips included);
* the split by stride leaves every micro-batch on all the devices and moves no data;
* `model.moe_capacity_factor` reaches the MoE layers: a small capacity drops token copies on an
  expert mesh (another loss), a capacity above the dropless size is dropless.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import qwen3_jax
from qwen3_jax.config import ConfigError
from qwen3_jax.plan import hlo
from qwen3_jax.train import accumulate
from qwen3_jax.train.step import build_train_step

from train_helpers import TINY_MOE, packed_batch, tiny_config


def _mesh(spec, n=4):
    return qwen3_jax.make_mesh(spec, devices=jax.devices()[:n])


def _steps(cfg, mesh, n=2, rows=8):
    ts = build_train_step(cfg, mesh)
    state, out = ts.init_state(), []
    for s in range(n):
        state, m = ts(state, ts.place_batch(packed_batch(rows, 32, 256, seed=s)))
        out.append(jax.device_get(m))
    return ts, state, out


def _compare(a_run, b_run, keys=("loss", "total_loss", "grad_norm")):
    (_, s1, m1), (_, s2, m2) = a_run, b_run
    for a, b in zip(m1, m2):
        for k in keys:
            np.testing.assert_allclose(b[k], a[k], rtol=2e-5, err_msg=k)
    for a, b in zip(jax.tree.leaves(s1["params"]), jax.tree.leaves(s2["params"])):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("spec", ["data=4", "data=2,fsdp=2"])
def test_micro_batches_equal_one_batch_on_four_devices(spec):
    one = _steps(tiny_config(train={"batch_size": 8}), _mesh(spec))
    acc = _steps(tiny_config(train={"batch_size": 8, "grad_accum": 2}), _mesh(spec))
    _compare(one, acc)


def test_moe_micro_batches_equal_one_batch_under_data_parallelism():
    keys = ("loss", "total_loss", "grad_norm", "balance_loss")
    one = _steps(tiny_config(TINY_MOE, train={"batch_size": 8}), _mesh("data=4"))
    acc = _steps(tiny_config(TINY_MOE, train={"batch_size": 8, "grad_accum": 2}), _mesh("data=4"))
    _compare(one, acc, keys)
    np.testing.assert_array_equal(one[2][0]["expert_counts"], acc[2][0]["expert_counts"])


def test_data_parallel_gradients_are_reduced_once_per_step():
    """No all-reduce runs inside a loop (the micro-batch scan): the gradients are reduced after it."""
    ts = build_train_step(tiny_config(train={"batch_size": 16, "grad_accum": 4}), _mesh("data=4"))
    c = hlo.collectives(ts.lower(ts.abstract_state(), ts.abstract_batch()).compile().as_text())
    assert c["ops"]["all-reduce"]["count"] > 0
    assert c["in_loops"].get("all-reduce", 0) == 0, c["in_loops"]


def test_split_by_stride_keeps_rows_on_their_devices():
    mesh = _mesh("data=4")
    spec = P("data", None)
    x = jnp.arange(16 * 3, dtype=jnp.int32).reshape(16, 3)
    x = jax.device_put(x, NamedSharding(mesh, spec))
    f = jax.jit(lambda b: accumulate.split(b, 2, mesh, spec))
    micro = f({"tokens": x})["tokens"]
    np.testing.assert_array_equal(micro[1], np.asarray(x)[1::2])
    assert micro.sharding.spec[:2] == (None, "data")
    # Device d holds rows 4d .. 4d+3: micro-batch 0 takes 4d and 4d+2 there, nothing moves.
    assert not hlo.collectives(f.lower({"tokens": x}).compile().as_text())["ops"]


def test_capacity_factor_is_checked():
    with pytest.raises(ConfigError, match="model.moe_capacity_factor=0.0"):
        tiny_config(TINY_MOE, model={"moe_capacity_factor": 0}).validate()


@pytest.mark.slow
def test_capacity_factor_reaches_the_moe_layers():
    mesh = _mesh("expert=4")
    cfgs = {cf: tiny_config(TINY_MOE, model={"moe_capacity_factor": cf}, train={"batch_size": 8})
            for cf in (None, 0.25, 1e6)}
    runs = {cf: _steps(c, mesh, n=1) for cf, c in cfgs.items()}
    assert runs[0.25][0].module.moe_capacity_factor == 0.25
    dropless = float(runs[None][2][0]["loss"])
    # Copies were dropped. At init the MoE output is small, so the loss moves only ~4e-6 (relative).
    assert float(runs[0.25][2][0]["loss"]) != pytest.approx(dropless, rel=1e-6)
    assert float(runs[1e6][2][0]["loss"]) == pytest.approx(dropless, rel=1e-6)  # capped at the dropless size


@pytest.mark.parametrize("mesh, batch, accum, message", [
    ("data=2,fsdp=2", 6, 1, "= 6 rows per micro-batch do not split over the 4 data-parallel devices"),
    ("expert=2,tensor=2", 4, 4, "= 1 rows per micro-batch do not split over the 2 data-parallel devices"),
    ("sequence=4", 4, 1, "train.seq_len=30 does not split over sequence=4"),
])
def test_the_run_mesh_must_split_the_batch(mesh, batch, accum, message):
    # Batch shards are counted by `sharding.rules.batch_multiple` (the axes of the `batch` rule).
    from qwen3_jax.train.loop import make_run_mesh

    cfg = tiny_config(mesh=mesh, train={"batch_size": batch, "grad_accum": accum, "seq_len": 30})
    with pytest.raises(ConfigError, match=message):
        make_run_mesh(cfg, jax.devices()[:4])
    ok = tiny_config(mesh=mesh, train={"batch_size": 8, "grad_accum": 2, "seq_len": 32})
    assert make_run_mesh(ok, jax.devices()[:4]).devices.size == 4
