"""GRPO training: rollouts on the compiled engine, rule rewards, the clipped objective, the trainer's parts.

    cfg, section = load_post_config("configs/post/stage2_reasoning_rl.yaml", "grpo")
    grpo(cfg, GRPOSection.from_dict(section), "runs/p2", init_from="runs/p1")

One step: ``train.batch_size / group_size`` prompts (in a seeded order) → ``group_size``
completions each from the policy (`rollout.sample_groups`: the project's engine reading the
policy's current device params) → rewards (`rewards.combine` of the configured functions) →
group-normalised advantages → ``num_iterations`` optimizer steps on the clipped objective with a
KL penalty to the frozen reference (the starting weights, kept in the checkpoint). ``train.seq_len``
must hold ``max_prompt_tokens + max_new_tokens``. Logged per step: loss, KL, entropy, clip
fraction, reward mean/std (total and per function), response and thinking lengths, rollout
tokens/s and the rollout's share of the step.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
from typing import Any

import jax
import numpy as np

from qwen3_jax.config import ConfigError
from qwen3_jax.generate.sampling import Sampling
from qwen3_jax.post import rewards as R
from qwen3_jax.post import rollout, synthetic
from qwen3_jax.post.grpo_loss import GRPOLossConfig, group_advantages, policy_loss
from qwen3_jax.post.logprobs import token_logprobs
from qwen3_jax.post.rl_loop import RLRun, prompt_order, section_from_dict, step_seed
from qwen3_jax.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class GRPOSection:
    """The ``grpo`` section of a config.

    Attributes:
        prompts: JSONL files of ``{"messages": [...], <columns>}`` (e.g. ``answer``), or
            ``synthetic:MODES[:N]`` (MODES: think, no_think, mixed) for arithmetic prompts.
        tokenizer: a directory with tokenizer.json (None: the init checkpoint's, else Qwen3's).
        group_size: completions per prompt (G); ``train.batch_size`` must be a multiple.
        max_prompt_tokens, max_new_tokens: prompt and completion limits.
        overlong_prompts: "drop" or "error" for a prompt above ``max_prompt_tokens``.
        rewards: reward name -> weight. Names: "accuracy", "format", "length" (soft overlong penalty
            over the last ``length_buffer`` tokens), or "module:function" for your own.
        length_buffer: tokens of the length penalty's ramp.
        temperature, top_p, top_k: the rollout sampler (the loss scores logits / temperature, so
            the temperature must be finite and > 0: greedy decoding has no log-probabilities).
        epsilon, epsilon_high, beta, aggregation: the objective (`grpo_loss.GRPOLossConfig`).
        num_iterations: optimizer steps per rollout batch (each a trainer step).
        scale_rewards: divide advantages by the group std.
    """

    prompts: tuple[str, ...] = ("synthetic:mixed:256",)
    tokenizer: str | None = None
    group_size: int = 8
    max_prompt_tokens: int = 128
    max_new_tokens: int = 128
    overlong_prompts: str = "drop"
    rewards: dict = dataclasses.field(default_factory=lambda: {"accuracy": 1.0, "format": 0.5})
    length_buffer: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.04
    aggregation: str = "token"
    num_iterations: int = 1
    scale_rewards: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "GRPOSection":
        d = dict(d)
        if isinstance(d.get("prompts"), str):
            d["prompts"] = (d["prompts"],)
        if "prompts" in d:
            d["prompts"] = tuple(d["prompts"])
        out = section_from_dict(cls, d, "grpo")
        if out.group_size < 2:
            raise ConfigError(f"grpo.group_size={out.group_size} must be >= 2 (advantages compare a group)")
        if out.num_iterations < 1:
            raise ConfigError(f"grpo.num_iterations={out.num_iterations} must be >= 1")
        if out.overlong_prompts not in ("drop", "error"):
            raise ConfigError(f"grpo.overlong_prompts={out.overlong_prompts!r} must be drop or error")
        if not out.rewards:
            raise ConfigError("grpo.rewards: give at least one reward function")
        t = out.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ConfigError(f"grpo.temperature={t!r} must be a finite number > 0 (the loss scores the "
                              "logits divided by it; greedy sampling, 0, has no log-probabilities)")
        return out

    def loss_config(self) -> GRPOLossConfig:
        try:
            return GRPOLossConfig(self.epsilon, self.epsilon_high, self.beta, self.aggregation)
        except ValueError as e:
            raise ConfigError(f"grpo: {e}") from None

    def sampling(self) -> Sampling:
        try:
            return Sampling(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        except ValueError as e:
            raise ConfigError(f"grpo: {e}") from None


def reward_functions(section: GRPOSection) -> dict[str, Any]:
    """The configured reward functions by name (ConfigError for an unknown name)."""
    out = {}
    for name in section.rewards:
        if name in R.REWARDS:
            out[name] = R.REWARDS[name]
        elif name == "length":
            out[name] = R.length_penalty(section.max_new_tokens, min(section.length_buffer, section.max_new_tokens))
        elif ":" in name:
            mod, _, fn = name.partition(":")
            try:
                out[name] = getattr(importlib.import_module(mod), fn)
            except (ImportError, AttributeError) as e:
                raise ConfigError(f"grpo.rewards: cannot import {name!r} ({e})") from None
        else:
            raise ConfigError(f"grpo.rewards: unknown reward {name!r} (accuracy, format, length, or module:function)")
    return out


def check_rewards(fns: dict, section: GRPOSection, prompts: rollout.PromptSet) -> None:
    """Calls the reward functions once on made-up replies to the first prompts, so one that raises or
    returns the wrong number of values stops the run before its directory is written."""
    n = min(2, len(prompts))
    replies = ["<think>\nx\n</think>\n\n0<|im_end|>", "0"][:n]
    R.combine(fns, prompts.messages[:n], replies, weights=section.rewards, completion_ids=[[0]] * n,
              **{k: v[:n] for k, v in prompts.columns.items()})


def read_prompts(paths, seed: int = 0) -> list[dict]:
    """Prompt records from JSONL files or ``synthetic:MODES[:N]``."""
    import json

    out = []
    for p in paths:
        if p.startswith("synthetic:"):
            modes, _, n = p[len("synthetic:"):].partition(":")
            try:
                out += synthetic.prompt_records(int(n or 256), seed=seed, modes=modes)
            except ValueError as e:
                raise ConfigError(f"grpo.prompts: {p}: {e}") from None
            continue
        if not os.path.isfile(p):
            raise ConfigError(f"grpo.prompts: {p} does not exist")
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise rollout.PromptError(f"{p}:{n}: not valid JSON ({e.msg})") from None
    return out


def completion_stats(batch: rollout.RolloutBatch, tokenizer) -> dict[str, float]:
    """Response and thinking lengths, stop share and rollout throughput of a rollout batch."""
    lengths = [len(c) for c in batch.completion_ids]
    end_think = tokenizer.token_to_id("</think>")
    thinking = rollout.thinking_lengths(batch.completion_ids, end_think if end_think is not None else -1,
                                        batch.columns.get("enable_thinking"))
    return {"response_length": float(np.mean(lengths)), "thinking_length": float(np.mean(thinking)),
            "stopped": float(np.mean([r == "stop" for r in batch.finish_reasons])),
            "rollout_seconds": batch.seconds,
            "rollout_tokens_per_second": batch.generated_tokens / max(batch.seconds, 1e-9)}


def grpo_loss_fn(module, section: GRPOSection, chunk: int):
    """``loss(params, batch, extras)`` for `RLRun.make_update` (old log-probs from the batch)."""
    cfg = section.loss_config()

    def loss(params, batch, extras):
        return policy_loss(module, params, batch, cfg, chunk, section.temperature)

    return loss


def grpo(cfg: TrainConfig, section: GRPOSection, run_dir: str | os.PathLike, init_from: str | None = None,
         stop_at: int | None = None, quiet: bool = False, devices=None, tokenizer=None) -> tuple[RLRun, list[dict]]:
    """Runs (or resumes) GRPO; returns the run and the metric records of this invocation."""
    from qwen3_jax.api import Model
    from qwen3_jax.post.sft import load_tokenizer
    from qwen3_jax.sharding.placement import mesh_context

    G = section.group_size
    if cfg.train.batch_size % G:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be a multiple of grpo.group_size={G}")
    if cfg.train.seq_len < section.max_prompt_tokens + section.max_new_tokens:
        raise ConfigError(f"train.seq_len={cfg.train.seq_len} must hold grpo.max_prompt_tokens + max_new_tokens "
                          f"= {section.max_prompt_tokens + section.max_new_tokens}")
    # A checkpoint, and so a resume, must fall between two rollout batches: the old log-probs of a
    # batch are the sampling policy's, which a run resumed mid-batch no longer has.
    for name, value in (("checkpoint.every", cfg.checkpoint.every), ("train.steps", cfg.train.steps),
                        ("--stop-at", stop_at)):
        if value is not None and value % section.num_iterations:
            raise ConfigError(f"{name}={value} must be a multiple of grpo.num_iterations={section.num_iterations} "
                              "(a checkpoint falls between two rollout batches)")
    if cfg.train.grad_accum != 1:
        raise ConfigError("grpo: train.grad_accum must be 1")
    loss_cfg, sampling, fns = section.loss_config(), section.sampling(), reward_functions(section)
    tokenizer = tokenizer or load_tokenizer(section.tokenizer, init_from)
    if len(tokenizer) > cfg.model_config().vocab_size:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} ids but the model's vocabulary only "
                          f"{cfg.model_config().vocab_size}")
    prompts = rollout.PromptSet.from_records(read_prompts(section.prompts, cfg.train.seed), tokenizer,
                                             section.max_prompt_tokens, section.overlong_prompts)
    check_rewards(fns, section, prompts)
    frozen = (lambda p: {"ref": p}) if loss_cfg.beta > 0 else None
    run = RLRun(cfg, section, run_dir, init_from, devices, frozen_from=frozen, tokenizer=tokenizer)
    module = run.ts.module
    policy = Model(run.mc, run.state["params"], dtype=module.dtype, mesh=run.mesh)
    P = cfg.train.batch_size // G
    chunk = cfg.train.loss_chunk

    def scores(params, tokens, seg, pos):
        return token_logprobs(module, params, tokens, seg, pos, chunk, section.temperature)[0]

    scores_jit = jax.jit(scores)

    def produce(step, state):
        policy.params = state["params"]  # the engine reads the policy's device params
        idx = prompt_order(len(prompts), P, step // section.num_iterations, cfg.train.seed)
        batch = rollout.sample_groups(policy, tokenizer, prompts.take(idx), G, section.max_new_tokens,
                                      sampling.replace(seed=step_seed(cfg.train.seed, step)), cfg.train.seq_len)
        total, per_fn = R.combine(fns, batch.prompts, batch.completions, weights=section.rewards,
                                  completion_ids=batch.completion_ids, **batch.columns)
        adv = group_advantages(total, G, scale=section.scale_rewards)
        arrays = run.place({"tokens": batch.tokens, "segment_ids": batch.segment_ids, "positions": batch.positions,
                            "completion_mask": batch.completion_mask, "advantages": adv})
        with mesh_context(run.mc, run.mesh):
            arrays["old_logp"] = scores_jit(state["params"], arrays["tokens"], arrays["segment_ids"],
                                            arrays["positions"])
            if loss_cfg.beta > 0:
                arrays["ref_logp"] = scores_jit(state["frozen"]["ref"], arrays["tokens"], arrays["segment_ids"],
                                                arrays["positions"])
        host = {"reward_mean": float(np.mean(total)), "reward_std": float(np.std(total)),
                **{f"reward/{k}_mean": float(np.mean(v)) for k, v in per_fn.items()},
                **{f"reward/{k}_std": float(np.std(v)) for k, v in per_fn.items()},
                **completion_stats(batch, tokenizer)}
        return arrays, None, host

    update = run.make_update(grpo_loss_fn(module, section, chunk))
    records = run.loop(produce, update, section.num_iterations, stop_at, quiet, desc="grpo")
    return run, records
