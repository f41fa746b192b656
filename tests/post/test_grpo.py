"""GRPO on the trainer's parts: resume equals an uninterrupted run, logged metrics, one compiled rollout."""

import dataclasses
import os

import jax
import pytest

from qwen3_jax.config import ConfigError
from qwen3_jax.post.grpo import GRPOSection, grpo
from qwen3_jax.train.config import config_from_dict
from qwen3_jax.train.metrics import read_metrics

ONE = jax.devices()[:1]
MODEL = dict(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=512, tie_word_embeddings=False,
             name="test-grpo")


def cfg(steps=3, every=1, **train):
    return config_from_dict({
        "model": {"config": dict(MODEL)}, "mesh": "data=1",
        "train": {"steps": steps, "batch_size": 8, "seq_len": 96, "loss_chunk": 32, **train},
        "optimizer": {"lr": 1e-2, "warmup_steps": 0, "weight_decay": 0.0, "schedule": "constant"},
        "checkpoint": {"every": every, "keep": 2},
        "log": {"every": 1, "tensorboard": False, "progress": False, "peak_flops": 1e11}})


SECTION = GRPOSection.from_dict({"prompts": ["synthetic:think:8"], "group_size": 4, "max_prompt_tokens": 64,
                                 "max_new_tokens": 8, "rewards": {"format": 1.0, "length": 0.5},
                                 "length_buffer": 4, "beta": 0.1})


@pytest.mark.slow
def test_grpo_resume_equals_uninterrupted(tmp_path, small_tok):
    run, full = grpo(cfg(), SECTION, tmp_path / "full", quiet=True, devices=ONE, tokenizer=small_tok)
    _, part = grpo(cfg(), SECTION, tmp_path / "part", quiet=True, devices=ONE, tokenizer=small_tok, stop_at=2)
    run2, rest = grpo(cfg(), SECTION, tmp_path / "part", quiet=True, devices=ONE, tokenizer=small_tok)
    assert run2.resumed_from == 2 and [r["step"] for r in rest] == [3]
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bitwise, resumed step included
    assert [r["reward_mean"] for r in a] == [r["reward_mean"] for r in b]
    for key in ("loss", "kl", "entropy", "clip_fraction", "reward_mean", "reward_std", "reward/format_mean",
                "reward/length_std", "response_length", "thinking_length", "rollout_tokens_per_second",
                "rollout_share", "learning_rate", "grad_norm"):
        assert key in a[0], key
    assert a[0]["kl"] == 0.0 and a[-1]["kl"] > 0.0  # the policy moves away from the frozen reference


def test_grpo_config_errors_write_nothing(tmp_path, small_tok):
    with pytest.raises(ConfigError, match="multiple of grpo.group_size=3"):
        grpo(cfg(), GRPOSection.from_dict({"group_size": 3}), tmp_path / "a", devices=ONE, tokenizer=small_tok)
    with pytest.raises(ConfigError, match="must hold grpo.max_prompt_tokens"):
        grpo(cfg(seq_len=32), SECTION, tmp_path / "b", devices=ONE, tokenizer=small_tok)
    with pytest.raises(ConfigError, match="unknown reward 'nope'"):
        grpo(cfg(), GRPOSection.from_dict({"group_size": 4, "rewards": {"nope": 1.0}, "max_new_tokens": 8,
                                           "max_prompt_tokens": 64}), tmp_path / "c", devices=ONE,
             tokenizer=small_tok)
    twice = GRPOSection.from_dict({**dataclasses.asdict(SECTION), "num_iterations": 2})
    with pytest.raises(ConfigError, match="train.steps=3 must be a multiple of grpo.num_iterations=2"):
        grpo(cfg(every=2), twice, tmp_path / "d", devices=ONE, tokenizer=small_tok)
    with pytest.raises(ConfigError, match="--stop-at=1 must be a multiple of grpo.num_iterations=2"):
        grpo(cfg(steps=4, every=2), twice, tmp_path / "d", devices=ONE, tokenizer=small_tok, stop_at=1)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['group'\]"):
        GRPOSection.from_dict({"group": 4})
    for t in (0, 0.0, -1.0, float("nan"), float("inf"), "hot"):
        with pytest.raises(ConfigError, match=f"grpo.temperature={t!r} must be a finite number > 0"):
            GRPOSection.from_dict({"temperature": t})
    assert GRPOSection.from_dict({"temperature": 0.7}).temperature == 0.7
    assert not any(os.path.exists(tmp_path / r) for r in "abcd")


def bad_reward(prompts, completions, **columns):
    return [1.0]  # one value whatever the number of completions


def test_cli_bad_reward_exits_2_before_writing(tmp_path, small_tok):
    import subprocess
    import sys

    import yaml

    d = cfg().to_dict()
    d["grpo"] = {"prompts": ["synthetic:think:4"], "group_size": 4, "max_prompt_tokens": 64, "max_new_tokens": 8,
                 "tokenizer": str(small_tok.save(tmp_path / "tok")), "rewards": {"test_grpo:bad_reward": 1.0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(d))
    here = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), here])}
    p = subprocess.run([sys.executable, "-m", "qwen3_jax.cli.main", "grpo", "--config", str(tmp_path / "c.yaml"),
                        "--run-dir", str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, env=env)
    assert p.returncode == 2, p.stderr
    assert "'test_grpo:bad_reward' returned 1 values for 2 completions" in p.stderr and "Traceback" not in p.stderr
    assert not os.path.exists(tmp_path / "run")


def low_ids(prompts, completions, completion_ids, **columns):
    """A toy reward that varies within every group: the share of completion ids below 160."""
    return [sum(t < 160 for t in c) / max(len(c), 1) for c in completion_ids]


@pytest.mark.slow
def test_num_iterations_update_twice_on_one_rollout_against_its_old_logprobs(tmp_path, small_tok, monkeypatch):
    """num_iterations=2: one rollout per two updates; the second update's ratios are taken against the
    log-probs of the policy that sampled (not the updated one), so it clips; the rollout compiles once."""
    import jax.numpy as jnp
    import numpy as np

    from qwen3_jax.generate.engine import Engine
    from qwen3_jax.post import rollout
    from qwen3_jax.post.grpo_loss import grpo_objective
    from qwen3_jax.post.logprobs import token_logprobs
    from qwen3_jax.post.rl_loop import RLRun

    # The prompts that fit 64 tokens have 27-32: one prompt-length bucket of the engine at every rollout.
    section = GRPOSection.from_dict({"prompts": ["synthetic:mixed:8"], "group_size": 4, "max_prompt_tokens": 64,
                                     "max_new_tokens": 8, "rewards": {"test_grpo:low_ids": 1.0},
                                     "num_iterations": 2, "epsilon": 0.05, "beta": 0.1})
    rollouts, updates = [], []
    sample = rollout.sample_groups

    def counting_sample(model, *a, **k):
        out = sample(model, *a, **k)
        rollouts.append(Engine.for_model(model).compiled_programs())
        return out

    make_update = RLRun.make_update

    def recording_make_update(self, loss_fn, donate=True):
        call = make_update(self, loss_fn, donate)

        def update(state, batch, extras):  # host copies first: the update donates the state
            updates.append((jax.device_get(state["params"]), jax.device_get(state["frozen"]),
                            jax.device_get(batch)))
            return call(state, batch, extras)

        return update

    monkeypatch.setattr(rollout, "sample_groups", counting_sample)
    monkeypatch.setattr(RLRun, "make_update", recording_make_update)
    run, recs = grpo(cfg(steps=4, every=2), section, tmp_path / "run", quiet=True, devices=ONE, tokenizer=small_tok)

    assert len(rollouts) == 2 and len(updates) == 4 and [r["step"] for r in recs] == [1, 2, 3, 4]
    assert rollouts[0] == rollouts[1]  # new params and seed, the same compiled engine programs
    module, loss_cfg = run.ts.module, section.loss_config()

    @jax.jit
    def scores(params, tokens, seg, pos):
        return token_logprobs(module, params, tokens, seg, pos, 32, section.temperature)[0]

    def logp(params, b):
        return scores(params, b["tokens"], b["segment_ids"], b["positions"])

    for i, (params, frozen, b) in enumerate(updates):
        first, _, b0 = updates[i - i % 2]
        for k in b0:  # the second update sees the first's batch, old log-probs included
            np.testing.assert_array_equal(b[k], b0[k])
        mask = b["completion_mask"]
        # Old log-probs: the sampling policy's (the params before the batch's first update).
        np.testing.assert_allclose(b["old_logp"] * mask, logp(first, b) * mask, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(b["ref_logp"] * mask, logp(frozen["ref"], b) * mask, rtol=1e-5, atol=1e-5)
        want, stats = grpo_objective(logp(params, b), b["old_logp"], b["ref_logp"], b["advantages"], mask, loss_cfg)
        np.testing.assert_allclose(recs[i]["loss"], float(want), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(recs[i]["clip_fraction"], float(stats["clip_fraction"]), atol=1e-6)
    assert np.abs(updates[0][2]["advantages"]).max() > 0
    assert not np.array_equal(updates[1][2]["tokens"], updates[2][2]["tokens"])  # a new rollout for steps 3-4
    assert recs[0]["clip_fraction"] == 0.0 and recs[2]["clip_fraction"] == 0.0  # ratio 1 at a batch's first update
    assert recs[1]["clip_fraction"] > 0.0 and recs[3]["clip_fraction"] > 0.0  # the updated policy is clipped
    assert recs[0]["reward_mean"] == recs[1]["reward_mean"]  # the same rollout's rewards
    assert recs[0]["rollout_share"] > 0.0 and recs[1]["rollout_share"] == 0.0  # step 2 samples nothing


def test_trainer_loss_is_policy_loss(monkeypatch):
    """The trainer's loss is `grpo_loss.policy_loss` with the section's constants (no second copy)."""
    import jax.numpy as jnp
    import numpy as np

    from post_helpers import tiny_model
    import importlib

    grpo_mod = importlib.import_module("qwen3_jax.post.grpo")  # the module (post.grpo is also the function)
    from qwen3_jax.post.grpo_loss import policy_loss

    model = tiny_model(64)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 64, (2, 9)), jnp.int32)
    mask = jnp.asarray((np.arange(9)[None, :] >= 4) & (np.arange(9)[None, :] < 8), jnp.float32).repeat(2, 0)
    batch = {"tokens": tokens, "segment_ids": jnp.ones_like(tokens), "positions": jnp.arange(9)[None].repeat(2, 0),
             "completion_mask": mask, "advantages": jnp.asarray([1.0, -1.0]),
             "old_logp": jnp.asarray(rng.normal(-4, 0.1, (2, 9)), jnp.float32),
             "ref_logp": jnp.asarray(rng.normal(-4, 0.1, (2, 9)), jnp.float32)}
    section = GRPOSection.from_dict({"temperature": 0.7, "epsilon": 0.1, "epsilon_high": 0.3, "beta": 0.2})
    calls = []
    monkeypatch.setattr(grpo_mod, "policy_loss", lambda *a, **k: calls.append(a) or policy_loss(*a, **k))
    value, stats = grpo_mod.grpo_loss_fn(model.module, section, 4)(model.params, batch, None)
    want, want_stats = policy_loss(model.module, model.params, batch, section.loss_config(), 4, 0.7)
    assert len(calls) == 1
    assert float(value) == float(want) and set(stats) == set(want_stats) and "entropy" in stats
