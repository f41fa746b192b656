"""Sampling: candidate sets on crafted logits, validation, seeds, and the drawn distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3_jax.generate.sampling import (GREEDY, NON_THINKING, THINKING, Sampling, apply_penalties,
                                         candidate_probs, next_tokens, vocab_limit)

# probabilities 0.4, 0.25, 0.15, 0.1, 0.06, 0.04 on ids 3, 0, 5, 1, 4, 2
PROBS = np.array([0.25, 0.1, 0.04, 0.4, 0.06, 0.15])
LOGITS = jnp.asarray(np.log(PROBS)[None, :], jnp.float32)


def _kept(sampling, logits=LOGITS, limit=None):
    p = np.asarray(candidate_probs(logits, sampling, limit or logits.shape[-1]))[0]
    return set(np.flatnonzero(p > 0).tolist())


def test_presets():
    assert (THINKING.temperature, THINKING.top_p, THINKING.top_k, THINKING.min_p) == (0.6, 0.95, 20, 0.0)
    assert (NON_THINKING.temperature, NON_THINKING.top_p, NON_THINKING.top_k, NON_THINKING.min_p) == (0.7, 0.8, 20, 0.0)
    assert GREEDY.greedy and not THINKING.greedy
    assert hash(THINKING) == hash(Sampling(0.6, 0.95, 20, 0.0))


@pytest.mark.parametrize("top_k, expected", [(1, {3}), (2, {3, 0}), (4, {3, 0, 5, 1}), (0, {0, 1, 2, 3, 4, 5}),
                                             (99, {0, 1, 2, 3, 4, 5})])
def test_top_k(top_k, expected):
    assert _kept(Sampling(temperature=1.0, top_k=top_k)) == expected


@pytest.mark.parametrize("top_p, expected", [
    (0.3, {3}),                 # 0.4 alone reaches 0.3
    (0.39, {3}),
    (0.41, {3, 0}),
    (0.65, {3, 0}),             # 0.4 + 0.25 = 0.65
    (0.66, {3, 0, 5}),
    (0.85, {3, 0, 5, 1}),       # ... + 0.15 + 0.1 = 0.9
    (0.95, {3, 0, 5, 1, 4}),    # 0.96
    (1.0, {0, 1, 2, 3, 4, 5}),
])
def test_top_p(top_p, expected):
    assert _kept(Sampling(temperature=1.0, top_p=top_p)) == expected


@pytest.mark.parametrize("min_p, expected", [(0.0, {0, 1, 2, 3, 4, 5}), (0.2, {3, 0, 5, 1}), (0.3, {3, 0, 5}),
                                             (0.5, {3, 0}), (0.7, {3}), (1.0, {3})])
def test_min_p(min_p, expected):
    # threshold = min_p * 0.4: 0.2 -> 0.08 keeps 0.1 and up, 0.3 -> 0.12, 0.5 -> 0.2, 0.7 -> 0.28
    assert _kept(Sampling(temperature=1.0, min_p=min_p)) == expected


def test_filters_combine_and_temperature_sharpens_top_p():
    # top-p acts on the top-k survivors renormalised: 0.5, 0.3125, 0.1875
    assert _kept(Sampling(temperature=1.0, top_k=3, top_p=0.6)) == {3, 0}
    # At temperature 0.5 the probabilities become p² renormalised: 0.4² / sum = 0.61 > 0.5.
    assert _kept(Sampling(temperature=0.5, top_p=0.5)) == {3}
    assert _kept(Sampling(temperature=1.0, top_k=3, min_p=0.5)) == {3, 0}


def test_vocab_limit_is_never_sampled():
    logits = jnp.asarray([[0.0, 1.0, 2.0, 50.0, 60.0]])
    assert _kept(Sampling(temperature=1.0), logits, limit=3) == {0, 1, 2}
    assert int(next_tokens(logits, jax.random.key(0), GREEDY, 3)[0]) == 2
    assert vocab_limit(151_936) == 151_669
    assert vocab_limit(256) == 256
    assert vocab_limit(151_936, 200) == 200


@pytest.mark.parametrize("kwargs, word", [
    (dict(temperature=-0.1), "temperature"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(top_k=-1), "top_k"), (dict(top_k=2.5), "top_k"), (dict(min_p=-0.1), "min_p"), (dict(min_p=1.1), "min_p"),
    (dict(repetition_penalty=0.0), "repetition_penalty"), (dict(presence_penalty=3.0), "presence_penalty"),
])
def test_invalid_values_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        Sampling(**kwargs)


def test_penalties():
    logits = jnp.asarray([[2.0, -2.0, 1.0]])
    seen = jnp.asarray([[True, True, False]])
    out = apply_penalties(logits, Sampling(repetition_penalty=2.0), seen, None)
    np.testing.assert_allclose(np.asarray(out), [[1.0, -4.0, 1.0]])
    out = apply_penalties(logits, Sampling(presence_penalty=1.5), None, seen)
    np.testing.assert_allclose(np.asarray(out), [[0.5, -3.5, 1.0]])


def test_same_seed_same_tokens():
    logits = jnp.tile(LOGITS, (64, 1))
    s = Sampling(temperature=1.0)
    a = next_tokens(logits, jax.random.key(7), s, 6)
    b = next_tokens(logits, jax.random.key(7), s, 6)
    c = next_tokens(logits, jax.random.key(8), s, 6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("sampling", [Sampling(temperature=1.0), Sampling(temperature=0.7, top_p=0.8, top_k=4),
                                      Sampling(temperature=1.3, min_p=0.2)])
def test_empirical_distribution_matches_filtered_softmax(sampling):
    draws = 20_000
    logits = jnp.tile(LOGITS, (draws, 1))
    toks = np.asarray(jax.jit(next_tokens, static_argnums=(2, 3))(logits, jax.random.key(1), sampling, 6))
    expected = np.asarray(candidate_probs(LOGITS, sampling, 6))[0]
    counts = np.bincount(toks, minlength=6)
    assert counts[expected == 0].sum() == 0, "a filtered-out token was drawn"
    keep = expected > 0
    exp = expected[keep] * draws
    chi2 = float(((counts[keep] - exp) ** 2 / exp).sum())
    dof = int(keep.sum()) - 1
    if dof == 0:
        return
    try:
        from scipy.stats import chi2 as dist
        critical = float(dist.ppf(0.999, dof))
    except ImportError:  # 99.9% quantiles for 1..5 degrees of freedom
        critical = [10.83, 13.82, 16.27, 18.47, 20.52][dof - 1]
    assert chi2 < critical, (chi2, critical, counts, exp)
    # The check has teeth: the unfiltered softmax is rejected when filtering removed mass.
    if keep.sum() < 6:
        full = PROBS ** (1 / sampling.temperature)
        full = full / full.sum() * draws
        assert float(((counts - full) ** 2 / full).sum()) > critical
