"""Strong-to-weak distillation (Qwen3 report arXiv 2505.09388 §4.5) on the trainer's parts.

    cfg, section = load_post_config("configs/post/distill.yaml", "distill")
    distill(cfg, DistillSection.from_dict(section), "runs/d", teacher="path/to/Qwen3-8B", init_from="S")

Each step samples completions for ``train.batch_size / group_size`` prompts (thinking and
non-thinking prompts alike) with the compiled engine, from the teacher (``mode: off_policy``) or
from the student itself (``mode: on_policy``), scores every completion position with both models,
and takes an optimizer step on the student's mean per-token KL to the teacher
(`distill_loss.chunked_kl`, forward or reverse). Teacher and student may differ in size but must
share the vocabulary (the same ``vocab_size``, and the same tokenizer when both checkpoints carry
one: `distill_loss.check_vocabularies`); the teacher may live on its own mesh (``teacher_mesh``)
over the same devices, its hidden states are moved to the student's layout before the loss.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from qwen3_jax.config import ConfigError
from qwen3_jax.generate.sampling import Sampling
from qwen3_jax.post import rollout
from qwen3_jax.post.distill_loss import DIRECTIONS, check_vocabularies, chunked_kl, masked_mean
from qwen3_jax.post.grpo import completion_stats, read_prompts
from qwen3_jax.post.logprobs import final_hidden, head_weight
from qwen3_jax.post.rl_loop import RLRun, prompt_order, section_from_dict, step_seed
from qwen3_jax.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class DistillSection:
    """The ``distill`` section of a config.

    Attributes:
        mode: "off_policy" (the teacher samples) or "on_policy" (the student samples).
        prompts: JSONL prompt files or ``synthetic:MODES[:N]`` (see `grpo.GRPOSection.prompts`).
        tokenizer: a directory with tokenizer.json (None: the teacher's, else Qwen3's).
        group_size: samples per prompt; ``train.batch_size`` must be a multiple.
        max_prompt_tokens, max_new_tokens: prompt and completion limits.
        temperature, top_p, top_k: the sampler.
        direction: "forward" KL(teacher || student) or "reverse" KL(student || teacher).
        kl_temperature: both models' logits are divided by it in the KL.
        teacher_mesh: mesh spec of the teacher over the same devices, e.g. "tensor=8" (None: the
            teacher is not sharded). Used when the teacher is given as a path; a `Model` keeps its mesh.
    """

    mode: str = "on_policy"
    prompts: tuple[str, ...] = ("synthetic:mixed:256",)
    tokenizer: str | None = None
    group_size: int = 1
    max_prompt_tokens: int = 128
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    direction: str = "forward"
    kl_temperature: float = 1.0
    teacher_mesh: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "DistillSection":
        d = dict(d)
        if "prompts" in d:
            d["prompts"] = (d["prompts"],) if isinstance(d["prompts"], str) else tuple(d["prompts"])
        out = section_from_dict(cls, d, "distill")
        if out.mode not in ("on_policy", "off_policy"):
            raise ConfigError(f"distill.mode={out.mode!r} must be on_policy or off_policy")
        if out.direction not in DIRECTIONS:
            raise ConfigError(f"distill.direction={out.direction!r} must be one of {DIRECTIONS}")
        if out.group_size < 1 or out.kl_temperature <= 0:
            raise ConfigError("distill: group_size must be >= 1 and kl_temperature > 0")
        return out


def load_teacher(path: str, mesh=None, dtype="float32"):
    """The teacher `Model` from a Hugging Face, Orbax or training-run directory."""
    from qwen3_jax.api import Model, load
    from qwen3_jax.sharding.placement import shard_params
    from qwen3_jax.train import checkpoint as ck

    if ck.is_run_dir(path):
        src = ck.ParamSource(path)
        abstract = jax.eval_shape(lambda: __import__("qwen3_jax").init_params(src.config, 0))
        host = ck.restore_params_subtree(path, jax.tree.map(lambda a: np.empty(a.shape, a.dtype), abstract))
        params = jax.tree.map(jnp.asarray, host) if mesh is None else shard_params(host, src.config, mesh)
        return Model(src.config, params, dtype=jnp.float32 if dtype == "float32" else jnp.bfloat16, mesh=mesh)
    if not os.path.isdir(path):
        raise ConfigError(f"--teacher {path}: not a directory (a training run, an Orbax or a HF checkpoint)")
    return load(path, dtype=dtype, mesh=mesh)


def checkpoint_tokenizer(path: str | os.PathLike | None):
    """The tokenizer.json of a checkpoint or run directory, or None when it has none."""
    from qwen3_jax.text.tokenizer import Tokenizer

    if path is None or not os.path.isfile(os.path.join(os.fspath(path), "tokenizer.json")):
        return None
    return Tokenizer.from_pretrained(path)


def distill(cfg: TrainConfig, section: DistillSection, run_dir: str | os.PathLike, teacher, init_from: str | None = None,
            stop_at: int | None = None, quiet: bool = False, devices=None, tokenizer=None):
    """Runs (or resumes) distillation; returns (the `RLRun`, the metric records of this invocation).

    Args:
        teacher: a `qwen3_jax.Model` or a path for `load_teacher`.
    """
    from qwen3_jax.api import Model
    from qwen3_jax.post.sft import load_tokenizer
    from qwen3_jax.sharding.mesh import make_mesh
    from qwen3_jax.sharding.placement import mesh_context

    G = section.group_size
    if cfg.train.batch_size % G:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be a multiple of distill.group_size={G}")
    if cfg.train.seq_len < section.max_prompt_tokens + section.max_new_tokens:
        raise ConfigError(f"train.seq_len={cfg.train.seq_len} must hold distill.max_prompt_tokens + max_new_tokens")
    try:
        sampling = Sampling(temperature=section.temperature, top_p=section.top_p, top_k=section.top_k)
    except ValueError as e:
        raise ConfigError(f"distill: {e}") from None
    if isinstance(teacher, (str, os.PathLike)):
        t_path = os.fspath(teacher)
        try:
            t_mesh = make_mesh(section.teacher_mesh, devices=devices) if section.teacher_mesh else None
        except ValueError as e:
            raise ConfigError(f"distill.teacher_mesh: {e}") from None
        teacher = load_teacher(t_path, t_mesh)
        t_tok = checkpoint_tokenizer(t_path)
    else:
        t_path, t_tok = None, teacher.tokenizer
    check_vocabularies(teacher.config, cfg.model_config(), t_tok, checkpoint_tokenizer(init_from))
    tokenizer = tokenizer or load_tokenizer(section.tokenizer, t_path or init_from)
    if len(tokenizer) > teacher.config.vocab_size:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} ids, the models' vocabulary {teacher.config.vocab_size}")
    prompts = rollout.PromptSet.from_records(read_prompts(section.prompts, cfg.train.seed), tokenizer,
                                             section.max_prompt_tokens)
    run = RLRun(cfg, section, run_dir, init_from, devices, tokenizer=tokenizer)
    module = run.ts.module
    student = Model(run.mc, run.state["params"], dtype=module.dtype, mesh=run.mesh)
    P = cfg.train.batch_size // G
    chunk = cfg.train.loss_chunk
    t_head = head_weight(teacher.params, teacher.config)
    t_layout = t_head[1]

    @jax.jit
    def teacher_hidden(params, tokens, seg, pos):
        return final_hidden(teacher.module, params, tokens, seg, pos)

    def produce(step, state):
        student.params = state["params"]
        roller = student if section.mode == "on_policy" else teacher
        idx = prompt_order(len(prompts), P, step, cfg.train.seed)
        batch = rollout.sample_groups(roller, tokenizer, prompts.take(idx), G, section.max_new_tokens,
                                      sampling.replace(seed=step_seed(cfg.train.seed, step)), cfg.train.seq_len)
        arrays = run.place({"tokens": batch.tokens, "segment_ids": batch.segment_ids, "positions": batch.positions,
                            "completion_mask": batch.completion_mask})
        with mesh_context(teacher.config, teacher.mesh):
            th = teacher_hidden(teacher.params, batch.tokens, batch.segment_ids, batch.positions)
        arrays["teacher_hidden"] = jax.device_put(th, run.batch_sharding(3))
        replicated = jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec())
        return arrays, jax.device_put(t_head[0], replicated), completion_stats(batch, tokenizer)

    def loss(params, batch, teacher_head):
        hidden = final_hidden(module, params, batch["tokens"], batch["segment_ids"], batch["positions"])
        kl = chunked_kl(hidden, head_weight(params, run.mc), batch["teacher_hidden"], (teacher_head, t_layout), chunk,
                        section.direction, section.kl_temperature)
        return masked_mean(kl, batch["completion_mask"]), {}

    update = run.make_update(loss)
    records = run.loop(produce, update, 1, stop_at, quiet, desc="distill")
    return run, records
