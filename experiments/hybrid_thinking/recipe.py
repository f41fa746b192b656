"""The training stages of the demo model, built from the project's trainer and post-training pieces.

* `pretrain`: the project's jitted train step (`train.step.build_train_step`) on packed plain text.
* `sft`: supervised fine-tuning on packed chat samples (`post.sft_pipeline.packed_batches`) with
  the assistant-only loss mask, the project's chunked cross-entropy and AdamW
  (`train.loss`, `train.optimizer`).
* `grpo`: group rollouts on the compiled engine (`post.rollout.sample_groups`), rule rewards
  (`post.rewards` + the task's correctness), group advantages and the clipped objective
  (`post.grpo_loss`).
* `save_hf`: the params as a Hugging Face directory (config, safetensors, tokenizer, generation
  config) through the checkpoint name table.

The SFT / GRPO trainers with their CLIs (`qwen3-jax sft`, `qwen3-jax grpo`) are landing
separately; when they are on main these stages can call them instead of the loops below.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from qwen3_jax.config import Qwen3Config
from qwen3_jax.model.transformer import Qwen3
from qwen3_jax.post.sft_data import ChatSample
from qwen3_jax.train.config import OptimizerSection
from qwen3_jax.train.loss import chunked_cross_entropy, head_weight, next_token_targets
from qwen3_jax.train.optimizer import current_lr, make_optimizer


def text_samples(texts: Sequence[str], tokenizer) -> list[ChatSample]:
    """Plain documents as samples (every token a target), each ending with <|endoftext|>."""
    out = []
    for ids in tokenizer.encode_batch(list(texts)):
        ids = ids + [tokenizer.endoftext_id]
        out.append(ChatSample(np.asarray(ids, np.int32), np.ones(len(ids), bool), ""))
    return out


def _batches(samples, seq_len, batch_size, seed):
    from qwen3_jax.post.sft_pipeline import packed_batches, prepare

    kept, _ = prepare(samples, seq_len)
    return iter(packed_batches(kept, seq_len, batch_size, seed=seed))


def _loop(name: str, steps: int, step_fn: Callable, log_every: int = 10) -> list[dict]:
    history, start = [], time.perf_counter()
    bar = tqdm(range(steps), desc=name, mininterval=5)
    for i in bar:
        metrics = step_fn(i)
        if i % log_every == 0 or i == steps - 1:
            m = {k: float(v) for k, v in metrics.items()}
            m.update(step=i + 1, seconds=time.perf_counter() - start)
            history.append(m)
            bar.set_postfix(loss=f"{m.get('loss', float('nan')):.3f}")
    return history


def pretrain(model_config: Qwen3Config, texts: Sequence[str], tokenizer, *, steps: int, batch_size: int,
             seq_len: int, lr: float, seed: int = 0) -> tuple[dict, list[dict]]:
    """Stage 1: next-token pretraining with the project's train step. Returns (params, history)."""
    from qwen3_jax.sharding.mesh import make_mesh
    from qwen3_jax.train.config import config_from_dict
    from qwen3_jax.train.step import build_train_step

    cfg = config_from_dict({
        "model": {"config": model_config.to_dict()},
        "train": {"steps": steps, "batch_size": batch_size, "seq_len": seq_len, "loss_chunk": 0, "seed": seed},
        "optimizer": {"lr": lr, "schedule": "cosine", "warmup_steps": max(1, steps // 20), "weight_decay": 0.01},
        "mesh": "data=1"})
    ts = build_train_step(cfg, make_mesh("data=1"), model_config)
    state = ts.init_state(seed)
    batches = _batches(text_samples(texts, tokenizer), seq_len, batch_size, seed)
    tokens_seen = [0]

    def step(i):
        nonlocal state
        b = next(batches)
        tokens_seen[0] += int((b["segment_ids"] != 0).sum())
        state, m = ts(state, ts.place_batch(b))
        return {"loss": m["loss"], "learning_rate": m["learning_rate"], "tokens": tokens_seen[0]}

    history = _loop("pretrain", steps, step)
    return jax.device_get(state["params"]), history


class Trainer:
    """Masked-loss SFT and GRPO updates of one module with AdamW (`train.optimizer`)."""

    def __init__(self, model_config: Qwen3Config, params, *, lr: float, steps: int, warmup: int = 0,
                 schedule: str = "cosine", weight_decay: float = 0.01):
        self.config = model_config
        self.module = Qwen3(model_config, dtype=jnp.float32, param_dtype=jnp.float32)
        self.tx = make_optimizer(OptimizerSection(lr=lr, schedule=schedule, warmup_steps=warmup,
                                                  weight_decay=weight_decay, min_lr_ratio=0.1), steps)
        self.params = jax.tree.map(jnp.asarray, params)
        self.opt_state = self.tx.init(self.params)
        self._sft = jax.jit(self._sft_step, donate_argnums=(0, 1))
        self._grpo = {}

    def _apply(self, params, grads, opt_state):
        updates, opt_state = self.tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)

    def _sft_step(self, params, opt_state, batch):
        def loss_fn(p):
            out = self.module.apply({"params": p}, batch["tokens"], positions=batch["positions"],
                                    segment_ids=batch["segment_ids"], compute_logits=False)
            targets, _ = next_token_targets(batch["tokens"], batch["segment_ids"])
            weights = batch["loss_mask"].astype(jnp.float32)
            head, layout = head_weight(p, self.config)
            ce = chunked_cross_entropy(out.final_hidden, head, targets, weights, 0, layout, jnp.float32)
            return ce / jnp.maximum(weights.sum(), 1.0)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        params, opt_state, gnorm = self._apply(params, grads, opt_state)
        return params, opt_state, {"loss": loss, "grad_norm": gnorm, "learning_rate": current_lr(opt_state)}

    def sft(self, name: str, samples: Sequence[ChatSample], *, steps: int, batch_size: int, seq_len: int,
            seed: int = 0) -> list[dict]:
        batches = _batches(samples, seq_len, batch_size, seed)

        def step(i):
            b = {k: jnp.asarray(v) for k, v in next(batches).items()}
            self.params, self.opt_state, m = self._sft(self.params, self.opt_state, b)
            return m

        return _loop(name, steps, step)

    def grpo_update(self, batch: dict, loss_config) -> dict:
        from qwen3_jax.post.grpo_loss import policy_loss

        key = loss_config
        if key not in self._grpo:
            def step(params, opt_state, b):
                (loss, stats), grads = jax.value_and_grad(
                    lambda p: policy_loss(self.module, p, b, loss_config), has_aux=True)(params)
                params, opt_state, gnorm = self._apply(params, grads, opt_state)
                return params, opt_state, dict(stats, loss=loss, grad_norm=gnorm)

            self._grpo[key] = jax.jit(step, donate_argnums=(0, 1))
        self.params, self.opt_state, m = self._grpo[key](self.params, self.opt_state, batch)
        return m


def grpo(trainer: Trainer, tokenizer, records: Callable[[int], list[dict]], reward_fns: dict, *, steps: int,
         prompts_per_step: int, group_size: int, max_new_tokens: int, seq_len: int, name: str = "grpo",
         temperature: float = 1.0, seed: int = 0) -> list[dict]:
    """GRPO: per step, `prompts_per_step` prompts (``records(step)``: ``{"messages", **columns}``)
    get `group_size` sampled completions each, scored by ``reward_fns``; one policy update on-policy."""
    from qwen3_jax.api import Model
    from qwen3_jax.generate.sampling import Sampling
    from qwen3_jax.post import rewards as R
    from qwen3_jax.post.grpo_loss import GRPOLossConfig, group_advantages
    from qwen3_jax.post.rollout import PromptSet, sample_groups

    model = Model(trainer.config, trainer.params)
    loss_config = GRPOLossConfig(beta=0.0)

    def step(i):
        model.params = trainer.params
        prompts = PromptSet.from_records(records(i), tokenizer, max_prompt_tokens=seq_len - max_new_tokens)
        rollout = sample_groups(model, tokenizer, prompts, group_size, max_new_tokens,
                                Sampling(temperature=temperature, seed=seed * 100_003 + i), seq_len=seq_len)
        total, per_fn = R.combine(reward_fns, rollout.prompts, rollout.completions,
                                  completion_ids=rollout.completion_ids, **rollout.columns)
        total = np.asarray(total, np.float32)
        adv = group_advantages(total, group_size)
        batch = {"tokens": rollout.tokens, "segment_ids": rollout.segment_ids, "positions": rollout.positions,
                 "completion_mask": rollout.completion_mask, "advantages": adv.astype(np.float32)}
        batch = {k: jnp.asarray(v) for k, v in batch.items()}
        from qwen3_jax.post.logprobs import token_logprobs

        batch["old_logp"] = jax.lax.stop_gradient(token_logprobs(trainer.module, trainer.params, batch["tokens"],
                                                                 batch["segment_ids"], batch["positions"])[0])
        m = trainer.grpo_update(batch, loss_config)
        m["reward"] = float(total.mean())
        for k, v in per_fn.items():
            m["reward_" + k] = float(np.mean(v))
        m["rollout_seconds"] = rollout.seconds
        return m

    return _loop(name, steps, step, log_every=1)


def save_hf(out_dir: str | os.PathLike, config: Qwen3Config, params, tokenizer, generation: dict | None = None) -> None:
    """Writes config.json, model.safetensors, the tokenizer files and generation_config.json."""
    from qwen3_jax.checkpoint.hf_mapping import hf_tensors, to_hf
    from qwen3_jax.checkpoint.safetensors_write import Entry, write_tensors

    params = jax.device_get(params)
    targets = list(hf_tensors(config))

    def get(path):
        node = params
        for k in path:
            node = node[k]
        return np.asarray(node, np.float32)

    arrays = [(t.hf_name, np.ascontiguousarray(to_hf(t.rule, get(t.path)[t.index], config))) for t in targets]
    entries = [Entry(name, a.shape, a.dtype) for name, a in arrays]
    os.makedirs(out_dir, exist_ok=True)
    write_tensors(out_dir, iter(arrays), entries, 1 << 40)
    hf = config.to_hf_dict()
    hf["torch_dtype"] = "float32"
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf, f, indent=2)
    tokenizer.save(out_dir)
    gen = {"bos_token_id": tokenizer.endoftext_id, "eos_token_id": list(tokenizer.eos_token_ids),
           "pad_token_id": tokenizer.endoftext_id, "do_sample": True, "temperature": 0.6, "top_p": 0.95,
           "top_k": 20}
    gen.update(generation or {})
    with open(os.path.join(out_dir, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump(gen, f, indent=2)
