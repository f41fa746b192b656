"""SIGKILL of `qwen3-jax sft` and `qwen3-jax grpo` once a checkpoint is complete, then the same command
again: the following steps log the same losses as an uninterrupted run, bit for bit."""

import os

import pytest
import yaml

from qwen3_jax.testing import kill_cli, run_cli
from qwen3_jax.train.checkpoint import latest_complete_step
from qwen3_jax.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# One CPU device in the commands (mesh data=1).
ENV = {"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
STEPS, EVERY = 8, 2
MODEL = dict(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=512, tie_word_embeddings=False,
             name="test-kill")
COMMON = {"model": {"config": MODEL}, "mesh": "data=1",
          "checkpoint": {"every": EVERY, "keep": 2},
          "log": {"every": 1, "tensorboard": False, "progress": False, "peak_flops": 1e11}}


def sft_yaml(tok_dir):
    return {**COMMON, "train": {"steps": STEPS, "batch_size": 4, "seq_len": 128, "loss_chunk": 32},
            "optimizer": {"lr": 3e-3, "warmup_steps": 1, "weight_decay": 0.0},
            "data": {"paths": ["synthetic:fusion:60"], "tokenizer": str(tok_dir)}}


def grpo_yaml(tok_dir):
    return {**COMMON, "train": {"steps": STEPS, "batch_size": 8, "seq_len": 96, "loss_chunk": 32},
            "optimizer": {"lr": 1e-2, "warmup_steps": 0, "weight_decay": 0.0, "schedule": "constant"},
            "grpo": {"prompts": ["synthetic:mixed:8"], "group_size": 4, "max_prompt_tokens": 64, "max_new_tokens": 8,
                     "rewards": {"format": 1.0, "length": 0.5}, "length_buffer": 4, "beta": 0.1,
                     "tokenizer": str(tok_dir)}}


# What must repeat exactly (timings, e.g. rollout tokens/s, may not).
KEYS = {"sft": ("step", "loss", "grad_norm", "target_tokens"),
        "grpo": ("step", "loss", "grad_norm", "kl", "clip_fraction", "entropy", "reward_mean", "response_length")}


def losses(run, command):
    return [tuple(r[k] for k in KEYS[command]) for r in read_metrics(run)]


@pytest.fixture(scope="module")
def configs(small_tok, tmp_path_factory):
    d = tmp_path_factory.mktemp("kill_cfg")
    tok_dir = small_tok.save(d / "tok")
    out = {}
    for name, make in (("sft", sft_yaml), ("grpo", grpo_yaml)):
        out[name] = d / f"{name}.yaml"
        out[name].write_text(yaml.safe_dump(make(tok_dir)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sft", "grpo"])
def test_sigkill_after_a_checkpoint_then_resume_is_bitwise_equal(tmp_path, configs, command):
    def args(run):
        return (command, "--config", str(configs[command]), "--run-dir", str(run), "--quiet")

    ref = tmp_path / "ref"
    p = run_cli(*args(ref), timeout=900, env=ENV)
    assert p.returncode == 0, p.stderr[-2000:]
    want = losses(ref, command)
    assert [r[0] for r in want] == list(range(1, STEPS + 1))

    run = tmp_path / "run"
    seen = kill_cli(*args(run), when=lambda: latest_complete_step(run), timeout=900, env=ENV)
    killed_at = latest_complete_step(run)
    assert seen >= EVERY and killed_at < STEPS, (seen, killed_at)  # killed mid-run, after a complete checkpoint
    p = run_cli(*args(run), timeout=900, env=ENV)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"(resumed from step {killed_at})" in p.stdout, p.stdout
    got = losses(run, command)
    assert got == want  # every step, those after the resumed checkpoint included, bit for bit
    assert latest_complete_step(run) == STEPS
