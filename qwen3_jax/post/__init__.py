"""Post-training (Qwen3 report arXiv 2505.09388 §4): SFT with thinking-mode fusion, GRPO, distillation.

    from qwen3_jax import post
    post.sft(cfg, "runs/p1", init_from="ckpt")                           # qwen3-jax sft
    post.grpo(cfg, post.GRPOSection.from_dict(section), "runs/p2")        # qwen3-jax grpo
    post.distill(cfg, post.DistillSection.from_dict(section), "runs/d", teacher="T")

The trainers run on the pretraining trainer (`qwen3_jax.train`): its config, mesh, step/optimizer,
checkpoints, resume and metrics. The pieces are usable alone from a notebook:

* ``rewards``: rule-based rewards (answer match, think-block format, length) and ``combine``.
* ``sft_data`` / ``fusion`` / ``sft_pipeline``: chat samples with assistant-only loss masks,
  thinking-mode fusion data, grain-packed batches. ``synthetic``: generated chat and prompt data.
* ``rollout``: G completions per prompt from the compiled engine. ``grpo_loss``: advantages and
  the clipped objective. ``logprobs``: chunked per-token log-probabilities. ``distill_loss``: KL.
* ``rl_loop``: the rollout-training loop shared by GRPO and distillation.
"""

from qwen3_jax.post.distill import DistillSection, distill
from qwen3_jax.post.grpo import GRPOSection, grpo
from qwen3_jax.post.rl_loop import load_post_config
from qwen3_jax.post.sft import SFTData, sft

__all__ = ["DistillSection", "GRPOSection", "SFTData", "distill", "grpo", "load_post_config", "sft"]
