"""Distillation: the KL equals one computed directly; chunking changes nothing; vocabularies must match."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from post_helpers import tiny_model
from qwen3_jax.post import distill_loss as D
from qwen3_jax.post import logprobs as LP


def direct_kl(p_logits, q_logits):
    """KL(p || q) per position with torch, from the softmax definitions."""
    p = torch.softmax(torch.tensor(np.asarray(p_logits), dtype=torch.float64), -1)
    q = torch.softmax(torch.tensor(np.asarray(q_logits), dtype=torch.float64), -1)
    return (p * (p.log() - q.log())).sum(-1).numpy()


def test_token_kl_equals_direct_kl():
    s = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 17)) * 2
    t = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 17)) * 2
    np.testing.assert_allclose(D.token_kl(s, t, "forward"), direct_kl(t, s), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(D.token_kl(s, t, "reverse"), direct_kl(s, t), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(D.token_kl(s, t, "forward", temperature=2.0), direct_kl(t / 2, s / 2), rtol=1e-5,
                               atol=1e-6)
    assert float(D.token_kl(t, t).max()) < 1e-6
    mask = jnp.asarray([[1, 1, 0, 0, 0], [0, 1, 1, 1, 0]])
    np.testing.assert_allclose(D.masked_mean(D.token_kl(s, t), mask),
                               (direct_kl(t, s) * np.asarray(mask)).sum() / 5, rtol=1e-5)
    # No gradient reaches the teacher.
    g = jax.grad(lambda tt: D.token_kl(s, tt).sum())(t)
    assert float(jnp.abs(g).max()) == 0.0


def test_chunked_kl_matches_and_heads_may_differ():
    hs = jax.random.normal(jax.random.PRNGKey(2), (2, 9, 8))
    ht = jax.random.normal(jax.random.PRNGKey(3), (2, 9, 12))  # the teacher is wider
    ws = jax.random.normal(jax.random.PRNGKey(4), (23, 8))     # tied [V, D]
    wt = jax.random.normal(jax.random.PRNGKey(5), (12, 23))    # untied [D, V]
    want = direct_kl(jnp.einsum("btd,dv->btv", ht, wt), jnp.einsum("btd,vd->btv", hs, ws))
    got = D.chunked_kl(hs, (ws, "VD"), ht, (wt, "DV"), chunk=4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    f = lambda h, c: D.chunked_kl(h, (ws, "VD"), ht, (wt, "DV"), c, "reverse").sum()  # noqa: E731
    np.testing.assert_allclose(jax.grad(f)(hs, 4), jax.grad(f)(hs, 0), rtol=1e-4, atol=1e-5)


def test_vocabulary_mismatch():
    with pytest.raises(D.VocabularyMismatch, match=r"teacher's vocabulary \(64 ids\) differs from the student's \(32\)"):
        D.check_vocabularies(tiny_model(64).config, tiny_model(32).config)
    with pytest.raises(D.VocabularyMismatch):
        D.token_kl(jnp.zeros((1, 1, 4)), jnp.zeros((1, 1, 5)))
    with pytest.raises(ValueError, match="direction"):
        D.token_kl(jnp.zeros((1, 1, 4)), jnp.zeros((1, 1, 4)), "sideways")


def test_a_few_steps_lower_the_kl():
    teacher, student = tiny_model(48, seed=1, layers=3, hidden=96), tiny_model(48, seed=2)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 48, (4, 16)), jnp.int32)
    mask = jnp.ones((4, 16)).at[:, -1].set(0)
    # A sharper teacher (logits x 4) so there is something to learn from random weights.
    t_logits = 4.0 * teacher.logits(tokens)
    tx = optax.adam(3e-3)

    def loss_fn(params):
        logits = student.module.apply({"params": params}, tokens).logits
        return D.masked_mean(D.token_kl(logits, t_logits), mask)

    @jax.jit
    def step(params, opt):
        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt = tx.update(g, opt, params)
        return loss, optax.apply_updates(params, upd), opt

    params, opt = student.params, tx.init(student.params)
    losses = []
    for _ in range(10):
        loss, params, opt = step(params, opt)
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0] and all(b < a for a, b in zip(losses[:3], losses[1:4])), losses
