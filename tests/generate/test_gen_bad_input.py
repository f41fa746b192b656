"""Bad inputs to sampling, `generate` and `logits`: one-line ValueErrors naming the input, never a
silent truncation, cast or out-of-vocabulary token."""

import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.config import Qwen3Config
from qwen3_jax.generate.sampling import GREEDY, MAX_TEMPERATURE, MIN_TEMPERATURE, Sampling, next_tokens
from qwen3_jax.testing import SMALL_DENSE


@pytest.fixture(scope="module")
def model():
    cfg = Qwen3Config(**{k: v for k, v in SMALL_DENSE.items() if k != "rope_theta"}, rope_theta=1e6)
    return qwen3_jax.Model(cfg, qwen3_jax.init_params(cfg, seed=3))


@pytest.mark.parametrize("field, value, message", [
    ("temperature", float("inf"), "temperature must be finite"),
    ("temperature", float("nan"), "temperature must be finite"),
    ("top_p", float("nan"), "top_p must be finite"),
    ("temperature", "0.7", "temperature must be a number, got str"),
    ("top_k", True, "top_k must be a number, got bool"),
    ("top_k", 2.5, "top_k must be an integer"),
    ("seed", 2**64, r"seed must be an integer in \[0, 2\*\*32\)"),
    ("seed", -1, r"seed must be an integer in \[0, 2\*\*32\)"),
    ("seed", None, "seed must be a number, got NoneType"),
    ("temperature", 3e38, r"temperature must lie in \[0, 1e\+30\]"),
    ("temperature", 1e39, r"temperature must lie in \[0, 1e\+30\]"),
    ("temperature", 1e300, r"temperature must lie in \[0, 1e\+30\]"),
])
def test_sampling_fields_are_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        Sampling(**{field: value})


@pytest.mark.parametrize("temperature", [1e-45, 1e-30, MIN_TEMPERATURE / 2])
def test_tiny_temperatures_are_greedy(model, temperature):
    prompts = [[5, 9, 2], [7]]
    s = Sampling(temperature=temperature, seed=1)
    assert s.greedy
    got = model.generate(prompts, max_new_tokens=4, sampling=s, stop_tokens=[])
    assert got == model.generate(prompts, max_new_tokens=4, sampling=GREEDY, stop_tokens=[])


def test_sampled_ids_stay_inside_the_vocabulary(model):
    out = model.generate([[1, 2]], max_new_tokens=16, sampling=Sampling(temperature=50.0, seed=0), stop_tokens=[])
    assert all(0 <= t < model.config.vocab_size for t in out[0])


@pytest.mark.parametrize("temperature", [1.0, 1e20, MAX_TEMPERATURE, 3e38, 1e39, 1e300])
def test_masked_ids_are_never_drawn_at_any_temperature(temperature):
    # 300 logits, limit 256: ids 256..299 are the padded rows and must never come out. The
    # largest temperatures are refused by Sampling; set them anyway to check the mask itself.
    import jax

    logits = jax.random.normal(jax.random.PRNGKey(0), (8, 300)).at[:, 256:].set(5.0)
    s = Sampling(seed=0)
    object.__setattr__(s, "temperature", temperature)
    got = np.concatenate([np.asarray(next_tokens(logits, jax.random.PRNGKey(k), s, 256)) for k in range(4)])
    assert got.min() >= 0 and got.max() < 256, got


@pytest.mark.parametrize("prompts, message", [
    ([[1, 2.0]], r"prompt 0 must hold integer token ids; item 1 is 2.0"),
    ([[1], [3.7]], r"prompt 1 must hold integer token ids; item 0 is 3.7"),
    ([[1, True]], r"item 1 is True"),
    ([1, 2, 3], "flat list of ids"),
    ("hello", "got a str"),
    ([[]], "prompt 0 is empty"),
    ([], "at least one prompt"),
    ([[1, 999]], r"prompt 0: token id 999 is outside the model's vocabulary \[0, 256\)"),
    ([[-1]], r"token id -1 is outside"),
    (np.array([[1.0, 2.0]]), "dtype float64"),
    (7, "got a int"),
])
def test_bad_prompts(model, prompts, message):
    with pytest.raises(ValueError, match=message):
        model.generate(prompts, max_new_tokens=2)


@pytest.mark.parametrize("stop, message", [([2.0], "stop_tokens must hold integer"), ([1000], "stop_tokens: token id"),
                                           (5, "stop_tokens must be a list")])
def test_bad_stop_tokens(model, stop, message):
    with pytest.raises(ValueError, match=message):
        model.generate([[1, 2]], max_new_tokens=2, stop_tokens=stop)


@pytest.mark.parametrize("kw, message", [(dict(max_new_tokens=2.5), "max_new_tokens must be a positive integer"),
                                         (dict(max_new_tokens=0), "max_new_tokens must be a positive integer"),
                                         (dict(sampling={"temperature": 0}), "sampling must be a qwen3_jax.Sampling")])
def test_bad_generate_arguments(model, kw, message):
    with pytest.raises(ValueError, match=message):
        model.generate([[1, 2]], **{"max_new_tokens": 2, **kw})


@pytest.mark.parametrize("ids, message", [([[]], r"got shape \(1, 0\)"), ([1, 2], r"got shape \(2,\)"),
                                          ([[1.0, 2.0]], "must be integers"), ("ab", "got a string"),
                                          ([[1, 256]], r"must lie in \[0, 256\)")])
def test_bad_logits_input(model, ids, message):
    with pytest.raises(ValueError, match=message):
        model.logits(ids)
