"""AdamW's weight-decay mask really applies (and spares the norm scales), and the schedules have
the shapes their configs describe."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qwen3_jax.train.config import OptimizerSection
from qwen3_jax.train.optimizer import current_lr, decay_mask, make_optimizer, make_schedule


def _params():
    return {"embed_tokens": {"embedding": jnp.ones((6, 4))},
            "layers": {"input_layernorm": {"scale": jnp.ones((2, 4))},  # stacked: [L, D], rank 2
                       "self_attn": {"q_proj": {"kernel": jnp.ones((2, 4, 2, 2))},
                                     "q_norm": {"scale": jnp.ones((2, 2))}}},
            "norm": {"scale": jnp.ones((4,))}}


def test_decay_mask_by_name_not_rank():
    m = decay_mask(_params())
    assert m["embed_tokens"]["embedding"] and m["layers"]["self_attn"]["q_proj"]["kernel"]
    assert not m["layers"]["input_layernorm"]["scale"] and not m["layers"]["self_attn"]["q_norm"]["scale"]
    assert not m["norm"]["scale"]


def test_weight_decay_applies_to_kernels_only():
    """With zero gradients AdamW's update is -lr·wd·param exactly where the mask is True."""
    cfg = OptimizerSection(lr=0.1, schedule="constant", weight_decay=0.5, clip_norm=1.0)
    tx = make_optimizer(cfg, total_steps=10)
    params = _params()
    state = tx.init(params)
    updates, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["embed_tokens"]["embedding"], 1 - 0.1 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(new["layers"]["self_attn"]["q_proj"]["kernel"], 0.95, rtol=1e-6)
    for scale in (new["norm"]["scale"], new["layers"]["input_layernorm"]["scale"],
                  new["layers"]["self_attn"]["q_norm"]["scale"]):
        np.testing.assert_array_equal(scale, 1.0)
    assert float(current_lr(state)) == pytest.approx(0.1)


def test_naive_inject_hyperparams_mask_is_not_applied():
    """The pitfall the static mask avoids: with the callable mask as an ordinary hyperparameter, optax
    0.2.8 does not apply it (here: the norm scales decay too); ours spares them."""
    cfg = OptimizerSection(lr=0.1, schedule="constant", weight_decay=0.5)
    naive = optax.inject_hyperparams(optax.adamw)(learning_rate=0.1, weight_decay=0.5, mask=decay_mask)
    ours = make_optimizer(cfg, 10)
    params = _params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    u_naive, _ = naive.update(zeros, naive.init(params), params)
    u_ours, _ = ours.update(zeros, ours.init(params), params)
    assert float(jnp.abs(u_naive["norm"]["scale"]).max()) > 0.0
    assert float(jnp.abs(u_ours["norm"]["scale"]).max()) == 0.0


def test_cosine_schedule():
    cfg = OptimizerSection(lr=1.0, schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    f = make_schedule(cfg, total_steps=110)
    assert float(f(0)) == 0.0 and float(f(5)) == pytest.approx(0.5)
    assert float(f(10)) == pytest.approx(1.0)
    assert float(f(60)) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-5)  # halfway through the cosine
    assert float(f(110)) == pytest.approx(0.1, rel=1e-5)


@pytest.mark.parametrize("shape,mid", [("linear", 0.55), ("cosine", 0.55), ("sqrt", 1 - np.sqrt(0.5) * 0.9)])
def test_wsd_schedule(shape, mid):
    cfg = OptimizerSection(lr=1.0, schedule="wsd", warmup_steps=10, decay_steps=20, decay_shape=shape,
                           min_lr_ratio=0.1)
    f = make_schedule(cfg, total_steps=100)
    assert float(f(10)) == pytest.approx(1.0) and float(f(79)) == pytest.approx(1.0)  # stable phase
    assert float(f(90)) == pytest.approx(mid, rel=1e-5)
    assert float(f(100)) == pytest.approx(0.1, rel=1e-5)


def test_clipping_bounds_the_global_norm():
    """A huge eps makes Adam's first update lr·g/eps, proportional to the clipped gradient."""
    cfg = OptimizerSection(lr=1.0, schedule="constant", clip_norm=0.5, b1=0.0, b2=0.0, eps=1e6, weight_decay=0.0)
    tx = make_optimizer(cfg, 10)
    p = {"w": jnp.zeros((3,))}
    updates, _ = tx.update({"w": jnp.array([3.0, 4.0, 0.0])}, tx.init(p), p)
    np.testing.assert_allclose(updates["w"] * -1e6, [0.3, 0.4, 0.0], rtol=1e-5)
