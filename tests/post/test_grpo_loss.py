"""GRPO advantages and the clipped objective against hand-computed values; chunked log-probs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3_jax.post import grpo_loss as G
from qwen3_jax.post import logprobs as LP
from post_helpers import tiny_model


def test_group_advantages_by_hand():
    # Group 1: rewards 1, 0, 0 -> mean 1/3, population std sqrt(2)/3 -> A = sqrt(2), -1/sqrt(2), -1/sqrt(2).
    # Group 2: all equal -> zero advantage (no learning signal from that prompt).
    adv = G.group_advantages([1.0, 0.0, 0.0, 0.5, 0.5, 0.5], group_size=3, eps=0.0 + 1e-12)
    np.testing.assert_allclose(adv, [math.sqrt(2), -1 / math.sqrt(2), -1 / math.sqrt(2), 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(G.group_advantages([2.0, 4.0], 2, scale=False), [-1.0, 1.0])
    with pytest.raises(ValueError, match="group_size 4"):
        G.group_advantages([1.0, 2.0, 3.0], 4)


def test_clipped_objective_by_hand():
    # Row 0 (A = +1): ratios 1.5 (clipped to 1.2), 1.0, 0.5 (unclipped: min picks 0.5).
    # Row 1 (A = -2): ratios 0.5 (clipped to 0.8: min(-1.0, -1.6) = -1.6), 2.0 (min(-4, -2.4) = -4), masked.
    ratios = np.array([[1.5, 1.0, 0.5], [0.5, 2.0, 1.0]])
    old = np.log(np.full((2, 3), 0.25))
    logp = old + np.log(ratios)
    ref = logp.copy()
    ref[0, 1] = logp[0, 1] + 0.5  # KL there: e^0.5 - 0.5 - 1
    mask = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
    adv = np.array([1.0, -2.0])
    terms = np.array([[1.2, 1.0, 0.5], [-1.6, -4.0, 0.0]])
    kl01 = math.exp(0.5) - 0.5 - 1
    beta = 0.1
    cfg = G.GRPOLossConfig(epsilon=0.2, beta=beta, aggregation="token")
    loss, stats = G.grpo_objective(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(ref), jnp.asarray(adv),
                                   jnp.asarray(mask), cfg)
    expected = -(terms.sum() - beta * kl01) / 5
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    # Clipping is active at (0,0) [ratio > 1.2, A > 0] and (1,0) [ratio < 0.8, A < 0]; (0,2) and (1,1) not.
    np.testing.assert_allclose(float(stats["clip_fraction"]), 2 / 5, rtol=1e-6)
    np.testing.assert_allclose(float(stats["kl"]), kl01 / 5, rtol=1e-6)
    # Sequence aggregation: mean per row, then over rows.
    seq = G.GRPOLossConfig(epsilon=0.2, beta=beta, aggregation="sequence")
    loss_s, _ = G.grpo_objective(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(ref), jnp.asarray(adv),
                                 jnp.asarray(mask), seq)
    np.testing.assert_allclose(float(loss_s), -(((1.2 + 1.0 + 0.5) - beta * kl01) / 3 + (-1.6 - 4.0) / 2) / 2,
                               rtol=1e-6)
    # epsilon_high widens the upper bound only: (0,0) is no longer clipped at 1.6.
    hi = G.GRPOLossConfig(epsilon=0.2, epsilon_high=0.6, beta=0.0)
    loss_h, stats_h = G.grpo_objective(jnp.asarray(logp), jnp.asarray(old), None, jnp.asarray(adv),
                                       jnp.asarray(mask), hi)
    np.testing.assert_allclose(float(loss_h), -(1.5 + 1.0 + 0.5 - 1.6 - 4.0) / 5, rtol=1e-6)
    assert float(stats_h["clip_high"]) == 0.0


def test_equal_rewards_give_only_the_kl_gradient():
    logp = jnp.log(jnp.full((3, 4), 0.3))
    adv = jnp.asarray(G.group_advantages([1.0, 1.0, 1.0], 3))
    mask = jnp.ones((3, 4))
    cfg = G.GRPOLossConfig(beta=0.0)
    grad = jax.grad(lambda lp: G.grpo_objective(lp, logp, None, adv, mask, cfg)[0])(logp)
    assert float(jnp.abs(grad).max()) == 0.0
    # At the first update ratio = 1: the gradient is -A/N per token (the REINFORCE form).
    adv2 = jnp.asarray([1.0, -1.0, 0.0])
    grad2 = jax.grad(lambda lp: G.grpo_objective(lp, jax.lax.stop_gradient(lp), None, adv2, mask, cfg)[0])(logp)
    np.testing.assert_allclose(grad2, -np.repeat(np.asarray(adv2)[:, None], 4, 1) / 12, rtol=1e-6)


def test_bad_config():
    with pytest.raises(ValueError, match="epsilon"):
        G.GRPOLossConfig(epsilon=0.0)
    with pytest.raises(ValueError, match="aggregation"):
        G.GRPOLossConfig(aggregation="mean")


def test_chunked_logprobs_equal_plain_and_grad():
    key = jax.random.PRNGKey(0)
    h = jax.random.normal(key, (2, 11, 8))
    head = jax.random.normal(jax.random.PRNGKey(1), (37, 8))  # tied layout [V, D]
    targets = jax.random.randint(jax.random.PRNGKey(2), (2, 11), 0, 37)
    plain = LP.logprobs_from_logits(jnp.einsum("btd,vd->btv", h, head), targets, 0.7)
    chunked = LP.chunked_token_logprobs(h, head, "VD", targets, chunk=4, temperature=0.7)
    for a, b in zip(plain, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    f = lambda hh, c: jnp.sum(LP.chunked_token_logprobs(hh, head, "VD", targets, c)[0])  # noqa: E731
    np.testing.assert_allclose(jax.grad(f)(h, 4), jax.grad(f)(h, 0), rtol=1e-5, atol=1e-5)


def test_model_token_logprobs_match_logits():
    model = tiny_model(64)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 9)), jnp.int32)
    logp, ent = LP.token_logprobs(model.module, model.params, tokens, chunk=4)
    ref = jax.nn.log_softmax(model.logits(tokens), -1)
    want = jnp.take_along_axis(ref[:, :-1], tokens[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(logp[:, :-1], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent, -(jnp.exp(ref) * ref).sum(-1), rtol=1e-5, atol=1e-5)
