"""Thinking-mode fusion data (Qwen3 report arXiv 2505.09388 §4.3).

Stage 3 of the report trains one model on both modes: thinking samples (reasoning in the think
block), non-thinking samples (the answer after an *empty* think block ``<think>\\n\\n</think>\\n\\n``,
kept so the format is the same in both modes), ``/think`` and ``/no_think`` soft switches in the
user or system message, thinking as the default (some thinking samples carry no flag), and
multi-turn samples whose flags change between turns, where the model follows the last flag.

    convo = set_mode(messages, think=False, flag="user")   # "... /no_think", empty think block
    mixed = fuse(think_convos, no_think_convos, FusionConfig(), seed=0)

Everything returns new message lists; the input is never modified. Rendering (and so what the
loss sees) is ``sft_data.tokenize_chat``: in multi-turn samples the chat template drops the
reasoning of earlier assistant turns, so only the final turn shows its mode's think block, and
only that turn is trained (``train_on="last"``, the default).
"""

from __future__ import annotations

import copy
import dataclasses
import random
from typing import Sequence

from qwen3_jax.post.sft_data import SFTDataError

FLAGS = {True: "/think", False: "/no_think"}


def _reasoning(msg: dict) -> tuple[str, str]:
    """(reasoning, answer) of an assistant message: reasoning_content or an inline think block."""
    content = msg.get("content") or ""
    if isinstance(msg.get("reasoning_content"), str):
        return msg["reasoning_content"], content
    if "</think>" in content:
        before, _, after = content.rpartition("</think>")
        return before.rpartition("<think>")[2].strip("\n"), after.lstrip("\n")
    return "", content


def _with_flag(text: str, flag: str) -> str:
    return f"{text.rstrip()} {flag}" if text.strip() else flag


def _final_turn(messages: Sequence[dict], think: bool) -> list[dict]:
    """A copy whose final assistant turn keeps its reasoning (think) or has it emptied."""
    msgs = copy.deepcopy(list(messages))
    if not msgs or msgs[-1].get("role") != "assistant":
        raise SFTDataError("a mode sample needs a conversation that ends with an assistant turn")
    reasoning, answer = _reasoning(msgs[-1])
    if think and not reasoning.strip():
        raise SFTDataError("a thinking sample needs reasoning in its final assistant turn")
    msgs[-1] = {k: v for k, v in msgs[-1].items() if k != "reasoning_content"}
    msgs[-1]["content"] = answer
    msgs[-1]["reasoning_content"] = reasoning if think else ""
    return msgs


def set_mode(messages: Sequence[dict], think: bool, flag: str | None = "user") -> list[dict]:
    """A copy of a conversation made into a sample of one mode.

    Args:
        messages: a conversation ending with an assistant turn.
        think: True for a thinking sample (the final turn keeps its reasoning), False for a
            non-thinking one (the final turn's reasoning is dropped: an empty think block).
        flag: where the soft switch goes: "user" (appended to the last user message before the
            final turn), "system" (appended to the system message, one is added when missing), or
            None (no flag; only for thinking samples, thinking being the default mode).

    Returns:
        The new message list.

    Raises:
        SFTDataError: no final assistant turn, no user message for the flag, a thinking sample
            without reasoning, or a flagless non-thinking sample.
    """
    msgs = _final_turn(messages, think)
    if flag is None:
        if not think:
            raise SFTDataError("a non-thinking sample needs a /no_think flag (thinking is the default)")
    elif flag == "user":
        users = [i for i, m in enumerate(msgs[:-1]) if m.get("role") == "user"]
        if not users:
            raise SFTDataError("flag='user' needs a user message before the final assistant turn")
        msgs[users[-1]]["content"] = _with_flag(msgs[users[-1]]["content"], FLAGS[think])
    elif flag == "system":
        if msgs[0].get("role") == "system":
            msgs[0]["content"] = _with_flag(msgs[0]["content"], FLAGS[think])
        else:
            msgs.insert(0, {"role": "system", "content": FLAGS[think]})
    else:
        raise ValueError(f"flag must be 'user', 'system' or None, got {flag!r}")
    return msgs


def multi_turn(turns: Sequence[Sequence[dict]], modes: Sequence[bool | None]) -> list[dict]:
    """Chains single-turn samples into one conversation whose mode may change from turn to turn.

    Args:
        turns: conversations of [user, assistant] (optionally a leading system message in the
            first one only), each assistant turn with reasoning when its mode is thinking.
        modes: per turn, True (``/think``), False (``/no_think``) or None (no flag: the previous
            flag still holds, thinking when there was none).

    Returns:
        The conversation; every assistant turn obeys the mode in force at its user message.
    """
    if len(turns) != len(modes) or not turns:
        raise ValueError(f"multi_turn needs one mode per turn; got {len(turns)} turns and {len(modes)} modes")
    out: list[dict] = []
    current = True
    for i, (turn, mode) in enumerate(zip(turns, modes)):
        current = current if mode is None else mode
        sample = _final_turn(turn, current) if mode is None else set_mode(turn, current, flag="user")
        if i > 0 and sample[0].get("role") == "system":
            raise SFTDataError(f"turn {i}: only the first turn may have a system message")
        out += sample
    return out


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """How `fuse` mixes the two modes.

    Attributes:
        no_flag: share of thinking samples left without a flag (thinking is the default).
        system_flag: share of flagged samples whose flag goes in the system message.
        multi_turn: share of output samples built from several turns with random flags.
        max_turns: most turns in a multi-turn sample.
    """

    no_flag: float = 0.3
    system_flag: float = 0.2
    multi_turn: float = 0.2
    max_turns: int = 3

    def __post_init__(self):
        for name in ("no_flag", "system_flag", "multi_turn"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"FusionConfig.{name} must lie in [0, 1], got {value}")
        if self.max_turns < 2:
            raise ValueError(f"FusionConfig.max_turns must be >= 2, got {self.max_turns}")


def fuse(think: Sequence[Sequence[dict]], no_think: Sequence[Sequence[dict]], config: FusionConfig = FusionConfig(),
         seed: int = 0) -> list[list[dict]]:
    """Mixes thinking and non-thinking conversations into one shuffled fusion dataset.

    Every input conversation is used once: single-turn samples get a flag (or none, for some
    thinking ones); with probability ``config.multi_turn`` a sample is chained with the next
    one or two single-turn samples of either mode, each turn flagged at random (an unflagged
    turn inherits the flag before it).

    Args:
        think: conversations whose final assistant turn has reasoning.
        no_think: conversations answered without reasoning (any reasoning is dropped).
        config: the mixing shares.
        seed: seed of the random choices.

    Returns:
        The fused conversations, shuffled.
    """
    rng = random.Random(seed)
    pool = [(list(c), True) for c in think] + [(list(c), False) for c in no_think]
    rng.shuffle(pool)
    out: list[list[dict]] = []
    i = 0
    while i < len(pool):
        single_turn = lambda c: sum(m.get("role") == "assistant" for m in c) == 1  # noqa: E731
        n = rng.randint(2, config.max_turns) if rng.random() < config.multi_turn else 1
        group = pool[i: i + n]
        if n > 1 and len(group) > 1 and all(single_turn(c) for c, _ in group) and \
                all(c[0].get("role") != "system" for c, _ in group[1:]):
            modes: list[bool | None] = []
            current = True
            for _, m in group:
                # A thinking turn may stay unflagged when thinking is already in force.
                flagless = m and current and rng.random() < config.no_flag
                modes.append(None if flagless else m)
                current = m
            out.append(multi_turn([c for c, _ in group], modes))
            i += len(group)
            continue
        convo, mode = pool[i]
        if mode and rng.random() < config.no_flag:
            out.append(set_mode(convo, True, flag=None))
        else:
            out.append(set_mode(convo, mode, flag="system" if rng.random() < config.system_flag else "user"))
        i += 1
    return out
