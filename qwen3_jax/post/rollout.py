"""RL rollouts: G completions per prompt from the project's compiled generation engine.

    prompts = PromptSet.from_records(records, tokenizer, max_prompt_tokens=128)
    batch = sample_groups(model, tokenizer, prompts.take(idx), group_size=8, max_new_tokens=256,
                          sampling=THINKING.replace(seed=step))
    batch.tokens, batch.completion_mask      # [P*G, T] for the update (fixed T: one compile)

The rollout is ``Engine.for_model(model).generate`` on the P×G rows: the same prefill/decode
programs and samplers as ``Model.generate``. The engine reads ``model.params``, so a trainer that
assigns the policy's new (device) params to ``model.params`` before each rollout shares the
weights without a host round trip; batch, prompt and output sizes are bucketed, so one compiled
program serves every step (``Engine.compiled_programs`` stays constant).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np

from qwen3_jax.generate.engine import Engine
from qwen3_jax.generate.sampling import Sampling
from qwen3_jax.text import chat


class PromptError(ValueError):
    """A prompt record that cannot be used for RL."""


@dataclasses.dataclass
class PromptSet:
    """Tokenized RL prompts and their extra columns (e.g. the reference ``answer``).

    Attributes:
        messages: per prompt, the message list (what reward functions receive as ``prompts``).
        ids: per prompt, the rendered prompt's token ids (ending with the generation prompt).
        columns: name -> per-prompt values, passed to reward functions. Always holds
            ``enable_thinking`` (the record's hard switch, default True), so the rewards and the
            length statistics know which prompts were rendered with the empty think block
            pre-filled (their replies have no block of their own).
        dropped_overlong: prompts dropped for exceeding ``max_prompt_tokens``.
    """

    messages: list[list[dict]]
    ids: list[list[int]]
    columns: dict[str, list[Any]]
    dropped_overlong: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_records(cls, records: Sequence[dict], tokenizer, max_prompt_tokens: int,
                     overlong: str = "drop") -> "PromptSet":
        """Renders and tokenizes ``{"messages": [...], other columns...}`` records.

        A record may set ``enable_thinking: false`` (the hard switch: an empty think block is
        pre-filled); it is kept as the ``enable_thinking`` column. The messages must not end with
        an assistant turn.

        Raises:
            PromptError: naming the record for a bad record, or a prompt too long with
                ``overlong="error"``.
        """
        if overlong not in ("drop", "error"):
            raise ValueError(f"overlong must be 'drop' or 'error', got {overlong!r}")
        messages, ids, columns, dropped = [], [], {}, 0
        keys = None
        for i, rec in enumerate(records):
            if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list):
                raise PromptError(f"prompt {i}: expected an object with a 'messages' list")
            try:
                chat.validate(rec["messages"])
            except chat.ChatFormatError as e:
                raise PromptError(f"prompt {i}: {e}") from None
            if rec["messages"][-1]["role"] == "assistant":
                raise PromptError(f"prompt {i}: ends with an assistant turn (a prompt must end with the user's turn)")
            cols = {k: v for k, v in rec.items() if k not in ("messages", "enable_thinking")}
            think = rec.get("enable_thinking", True)
            if not isinstance(think, bool):
                raise PromptError(f"prompt {i}: enable_thinking must be true or false, got {think!r}")
            if keys is None:
                keys = sorted(cols)
            elif sorted(cols) != keys:
                raise PromptError(f"prompt {i}: columns {sorted(cols)} differ from the first prompt's {keys}")
            text = chat.render(rec["messages"], enable_thinking=think, add_generation_prompt=True)
            toks = tokenizer.encode(text)
            if len(toks) > max_prompt_tokens:
                if overlong == "error":
                    raise PromptError(f"prompt {i} has {len(toks)} tokens, more than max_prompt_tokens "
                                      f"{max_prompt_tokens}")
                dropped += 1
                continue
            messages.append(rec["messages"])
            ids.append(toks)
            for k, v in cols.items():
                columns.setdefault(k, []).append(v)
            columns.setdefault("enable_thinking", []).append(think)
        if not ids:
            raise PromptError(f"no prompt fits max_prompt_tokens {max_prompt_tokens}")
        return cls(messages, ids, columns, dropped)

    def take(self, index: Sequence[int]) -> "PromptSet":
        """The prompts at ``index`` (in that order)."""
        return PromptSet([self.messages[i] for i in index], [self.ids[i] for i in index],
                         {k: [v[i] for i in index] for k, v in self.columns.items()})


@dataclasses.dataclass
class RolloutBatch:
    """G completions of P prompts as one training batch, completions of a prompt adjacent.

    Attributes:
        tokens: int32 [P*G, T] prompt + completion, right-padded with 0.
        segment_ids: int32 [P*G, T] 1 on real tokens, 0 on padding.
        positions: int32 [P*G, T].
        completion_mask: float32 [P*G, T], 1 at t when token t + 1 was generated (the stop token
            included): the positions whose scores the policy gradient uses.
        prompts: per row, the prompt's message list.
        completions: per row, the decoded completion (special tokens kept).
        completion_ids: per row, the generated ids.
        columns: per row, the prompt's extra columns.
        finish_reasons: per row, "stop" or "length".
        seconds: wall time of the generation.
    """

    tokens: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray
    completion_mask: np.ndarray
    prompts: list
    completions: list[str]
    completion_ids: list[list[int]]
    columns: dict[str, list]
    finish_reasons: list[str]
    seconds: float

    @property
    def generated_tokens(self) -> int:
        return sum(len(c) for c in self.completion_ids)


def assemble(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
             seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of prompt + completion, right-padded to ``seq_len``.

    Returns:
        (tokens, segment_ids, positions, completion_mask), each [rows, seq_len].
    """
    n = len(prompt_ids)
    tokens = np.zeros((n, seq_len), np.int32)
    seg = np.zeros((n, seq_len), np.int32)
    mask = np.zeros((n, seq_len), np.float32)
    for r, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        total = len(p) + len(c)
        if total > seq_len:
            raise ValueError(f"row {r}: {len(p)} prompt + {len(c)} completion tokens exceed seq_len {seq_len}")
        tokens[r, :total] = list(p) + list(c)
        seg[r, :total] = 1
        mask[r, len(p) - 1: total - 1] = 1.0  # position t scores token t + 1
    positions = np.where(seg > 0, np.arange(seq_len, dtype=np.int32)[None, :], 0).astype(np.int32)
    return tokens, seg, positions, mask


def sample_groups(model, tokenizer, prompts: PromptSet, group_size: int, max_new_tokens: int,
                  sampling: Sampling, seq_len: int | None = None, engine: Engine | None = None) -> RolloutBatch:
    """Samples ``group_size`` completions for each prompt with the model's compiled engine.

    Args:
        model: a `qwen3_jax.Model` (its current ``params`` are the policy).
        tokenizer: the `Tokenizer` (stop ids, vocabulary size, decoding).
        prompts: the prompts of this step.
        group_size: G completions per prompt.
        max_new_tokens: most tokens per completion.
        sampling: the sampler (its ``seed`` picks the draws; a new seed per step).
        seq_len: row length of the returned batch; default: longest prompt + max_new_tokens.
        engine: the engine to use (default: the one cached on the model).

    Returns:
        The rollout batch (rows: prompt 0's G completions, then prompt 1's, ...).
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    engine = engine or Engine.for_model(model)
    rows = [p for p in prompts.ids for _ in range(group_size)]
    start = time.perf_counter()
    result = engine.generate(rows, max_new_tokens=max_new_tokens, sampling=sampling,
                             stop_tokens=tokenizer.eos_token_ids, tokenizer_size=len(tokenizer))
    seconds = time.perf_counter() - start
    seq_len = seq_len or max(len(p) for p in prompts.ids) + max_new_tokens
    tokens, seg, pos, mask = assemble(rows, result.tokens, seq_len)
    rep = lambda values: [v for v in values for _ in range(group_size)]  # noqa: E731
    return RolloutBatch(tokens=tokens, segment_ids=seg, positions=pos, completion_mask=mask,
                        prompts=rep(prompts.messages),
                        completions=tokenizer.decode_batch(result.tokens),
                        completion_ids=result.tokens, columns={k: rep(v) for k, v in prompts.columns.items()},
                        finish_reasons=result.finish_reasons, seconds=seconds)


def thinking_lengths(completion_ids: Sequence[Sequence[int]], end_think_id: int,
                     enable_thinking: Sequence[bool] | None = None) -> list[int]:
    """Tokens before ``</think>`` in each completion (the whole completion when it never closes).

    A row whose ``enable_thinking`` is False had its empty think block pre-filled in the prompt:
    the completion is all answer, so its thinking length is 0.
    """
    hard_off = [False] * len(completion_ids) if enable_thinking is None else [t is False for t in enable_thinking]
    return [0 if off else c.index(end_think_id) if end_think_id in c else len(c)
            for c, off in zip(completion_ids, hard_off)]
