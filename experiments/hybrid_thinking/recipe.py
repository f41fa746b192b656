"""The training stages of the demo model, built from the project's trainer and post-training pieces.

* `pretrain` and `sft`: the project's jitted, sharded train step (`train.step.build_train_step`,
  the step `qwen3-jax train` and `qwen3-jax sft` run) with AdamW, linear warmup and cosine decay
  (`train.optimizer`), on packed rows (`post.sft_pipeline.packed_batches`); SFT passes the
  assistant-only ``loss_mask`` (`post.sft_data`) like `post.sft.sft`.
* `grpo`: the project's GRPO trainer (`post.grpo.grpo`, the one `qwen3-jax grpo` runs) on a run
  directory initialised from the previous stage: rollouts on the compiled engine, the built-in
  accuracy and format rewards, group advantages, the clipped objective.
* `save_hf`: the params as a Hugging Face directory (config, safetensors, tokenizer, generation
  config) through the checkpoint name table.

The SFT stages call the train step in memory rather than `post.sft.sft` on JSONL files: the
fusion stage's thinking-budget samples mask out the inserted stop-thinking text, which a
conversation record cannot express (see README.md).
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Sequence

import jax
import numpy as np
from tqdm import tqdm

from qwen3_jax.config import Qwen3Config
from qwen3_jax.post.sft_data import ChatSample


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


def _train_step(model_config: Qwen3Config, *, steps: int, batch_size: int, seq_len: int, lr: float, seed: int,
                masked: bool, warmup: int | None = None):
    """The project's jitted, sharded train step (`train.step.build_train_step`, the step `qwen3-jax
    train` and `qwen3-jax sft` run) with AdamW, warmup and cosine decay; `masked`: SFT loss mask."""
    from qwen3_jax.sharding.mesh import make_mesh
    from qwen3_jax.train.config import config_from_dict
    from qwen3_jax.train.step import BATCH_KEYS, LOSS_MASK, build_train_step

    cfg = config_from_dict({
        "model": {"config": model_config.to_dict()},
        "train": {"steps": steps, "batch_size": batch_size, "seq_len": seq_len, "loss_chunk": 0, "seed": seed},
        "optimizer": {"lr": lr, "schedule": "cosine", "warmup_steps": max(1, steps // 20) if warmup is None else warmup,
                      "weight_decay": 0.01, "min_lr_ratio": 0.05},
        "mesh": "data=1"})
    return build_train_step(cfg, make_mesh("data=1"), model_config,
                            batch_keys=BATCH_KEYS + ((LOSS_MASK,) if masked else ()))


def _run_steps(name: str, ts, state, samples, *, steps: int, batch_size: int, seq_len: int, seed: int):
    batches = _batches(samples, seq_len, batch_size, seed)
    tokens_seen = [0]

    def step(i):
        nonlocal state
        b = next(batches)
        tokens_seen[0] += int((b["segment_ids"] != 0).sum())
        state, m = ts(state, ts.place_batch(b))
        return {"loss": m["loss"], "learning_rate": m["learning_rate"], "grad_norm": m["grad_norm"],
                "tokens": tokens_seen[0]}

    history = _loop(name, steps, step)
    return jax.device_get(state["params"]), history


def pretrain(model_config: Qwen3Config, texts: Sequence[str], tokenizer, *, steps: int, batch_size: int,
             seq_len: int, lr: float, seed: int = 0) -> tuple[dict, list[dict]]:
    """Stage 1: next-token pretraining with the project's train step. Returns (params, history)."""
    ts = _train_step(model_config, steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, seed=seed,
                     masked=False)
    return _run_steps("pretrain", ts, ts.init_state(seed), text_samples(texts, tokenizer), steps=steps,
                      batch_size=batch_size, seq_len=seq_len, seed=seed)


def sft(name: str, model_config: Qwen3Config, params, samples: Sequence[ChatSample], *, steps: int,
        batch_size: int, seq_len: int, lr: float, seed: int = 0) -> tuple[dict, list[dict]]:
    """SFT on packed chat samples with the assistant-only loss mask: the project's train step with
    the batch's ``loss_mask`` (what `post.sft.sft` runs). Returns (params, history)."""
    ts = _train_step(model_config, steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, seed=seed,
                     masked=True)
    return _run_steps(name, ts, ts.state_from_params(params, seed), samples, steps=steps, batch_size=batch_size,
                      seq_len=seq_len, seed=seed)


def grpo(name: str, model_config: Qwen3Config, params, tokenizer, prompt_records: list[dict], work_dir, *,
         steps: int, prompts_per_step: int, group_size: int, max_new_tokens: int, seq_len: int, lr: float,
         temperature: float = 1.0, seed: int = 0, rewards: dict | None = None) -> tuple[dict, list[dict]]:
    """GRPO with the project's trainer (`post.grpo.grpo`, what `qwen3-jax grpo` runs): a run
    directory in ``work_dir`` initialised from ``params`` (written as a Hugging Face directory),
    prompts from a JSONL file (``{"messages", "answer"}`` records), the built-in ``accuracy`` and
    ``format`` rewards, one on-policy update per rollout batch, no KL term. Returns (params, history)."""
    from qwen3_jax.post.grpo import GRPOSection
    from qwen3_jax.post.grpo import grpo as run_grpo
    from qwen3_jax.train.config import config_from_dict

    work_dir = os.fspath(work_dir)
    init, run_dir = os.path.join(work_dir, "init"), os.path.join(work_dir, "run")
    if os.path.exists(run_dir):  # a stage that did not finish starts over
        import shutil

        shutil.rmtree(run_dir)
    save_hf(init, model_config, params, tokenizer)
    prompts = os.path.join(work_dir, "prompts.jsonl")
    with open(prompts, "w", encoding="utf-8") as f:
        for r in prompt_records:
            f.write(json.dumps(r) + "\n")
    cfg = config_from_dict({
        "model": {"config": model_config.to_dict()},
        "train": {"steps": steps, "batch_size": prompts_per_step * group_size, "seq_len": seq_len, "loss_chunk": 0,
                  "seed": seed},
        "optimizer": {"lr": lr, "schedule": "constant", "weight_decay": 0.0},
        "checkpoint": {"every": steps, "keep": 1, "async_save": False},
        "log": {"every": 1, "tensorboard": False, "peak_flops": 1e12, "progress": False},
        "mesh": "data=1"})
    section = GRPOSection.from_dict({
        "prompts": [prompts], "group_size": group_size, "max_prompt_tokens": seq_len - max_new_tokens,
        "max_new_tokens": max_new_tokens, "rewards": rewards or {"accuracy": 1.0, "format": 0.5},
        "temperature": temperature, "beta": 0.0})
    start = time.perf_counter()
    run, records = run_grpo(cfg, section, run_dir, init_from=init, quiet=True, tokenizer=tokenizer)
    history = []
    for r in records:  # the trainer's records, rewards renamed for the plots: reward, reward_<function>
        m = {}
        for k, v in r.items():
            if not isinstance(v, (int, float, np.floating, np.integer)) or k.endswith("_std"):
                continue
            k = "reward" if k == "reward_mean" else "reward_" + k[7:-5] if k.startswith("reward/") else k
            m[k] = float(v)
        history.append(m)
    if history:
        history[-1]["seconds"] = time.perf_counter() - start
    print(f"[{name}] " + "  ".join(f"step {int(h.get('step', i + 1))}: reward {h['reward']:.3f}"
                                   for i, h in enumerate(history)), flush=True)
    return jax.device_get(run.state["params"]), history


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
    gen = tokenizer.generation_config()
    gen.update(generation or {})
    with open(os.path.join(out_dir, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump(gen, f, indent=2)
