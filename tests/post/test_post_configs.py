"""Every configs/post YAML loads: the trainer's sections and the post-training section."""

import glob
import os

import pytest

from qwen3_jax.post.distill import DistillSection
from qwen3_jax.post.grpo import GRPOSection
from qwen3_jax.post.rl_loop import load_post_config
from qwen3_jax.post.sft import SFTData

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "post")
FILES = sorted(glob.glob(os.path.join(ROOT, "*.yaml")))


def test_there_are_configs():
    names = {os.path.basename(f) for f in FILES}
    for stage in ("stage1_cold_start", "stage2_reasoning_rl", "stage3_thinking_fusion", "stage4_general_rl",
                  "distill"):
        assert f"{stage}.yaml" in names and f"tiny_{stage}.yaml" in names


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_config_loads(path):
    name = os.path.basename(path)
    if "rl" in name:
        cfg, section = load_post_config(path, "grpo")
        s = GRPOSection.from_dict(section)
        assert cfg.train.seq_len >= s.max_prompt_tokens + s.max_new_tokens
        assert cfg.train.batch_size % s.group_size == 0
    elif "distill" in name:
        cfg, section = load_post_config(path, "distill")
        DistillSection.from_dict(section)
    else:
        cfg, section = load_post_config(path, "sft")
        assert section == {}
        SFTData.from_dict(cfg.data)
    cfg.model_config()
