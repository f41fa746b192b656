"""Post-training (Qwen3 report arXiv 2505.09388 §4): SFT with thinking-mode fusion, GRPO, distillation.

Modules: ``rewards`` (rule-based rewards), ``sft_data`` (chat samples -> tokens + assistant-only
loss masks, thinking-mode fusion, packing), ``synthetic`` (a tiny generated chat dataset),
``grpo_loss`` / ``rollout`` (group sampling, advantages, clipped objective), ``distill_loss``.
"""
