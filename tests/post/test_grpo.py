"""GRPO on the trainer's parts: resume equals an uninterrupted run, logged metrics, one compiled rollout."""

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


def cfg(steps=3, **train):
    return config_from_dict({
        "model": {"config": dict(MODEL)}, "mesh": "data=1",
        "train": {"steps": steps, "batch_size": 8, "seq_len": 96, "loss_chunk": 32, **train},
        "optimizer": {"lr": 1e-2, "warmup_steps": 0, "weight_decay": 0.0, "schedule": "constant"},
        "checkpoint": {"every": 1, "keep": 2},
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
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['group'\]"):
        GRPOSection.from_dict({"group": 4})
    assert not any(os.path.exists(tmp_path / r) for r in "abc")


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
