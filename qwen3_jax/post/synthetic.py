"""A generated chat dataset for tiny runs and tests: arithmetic questions in both thinking modes.

No download: questions are drawn from a seeded generator, with the worked reasoning and the answer
(``\\boxed{n}``) computed, so rule rewards can check them. A few samples call a tool.

    problems = arithmetic(100, seed=0)                  # [{"question", "reasoning", "answer"}]
    sft = sft_records(200, seed=0, mode="fusion")       # [{"messages", "tools"?}] for `qwen3-jax sft`
    rl = prompt_records(64, seed=0)                     # [{"messages", "answer"}] for `qwen3-jax grpo`
    write_jsonl("data/sft.jsonl", sft)
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from typing import Iterable

from qwen3_jax.post.fusion import FusionConfig, fuse, set_mode

CALCULATOR = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluates an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                   "required": ["expression"]}}}


def _problem(rng: random.Random, max_operand: int) -> dict:
    a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
    op = rng.choice("+-*w")
    if op == "+":
        q, ans, why = f"What is {a} + {b}?", a + b, f"{a} + {b} = {a + b}."
    elif op == "-":
        a, b = max(a, b), min(a, b)
        q, ans, why = f"What is {a} - {b}?", a - b, f"{a} - {b} = {a - b}."
    elif op == "*":
        a, b = a % 13 + 1, b % 13 + 1
        q, ans, why = f"What is {a} * {b}?", a * b, f"{a} * {b} = {a * b}."
    else:
        who = rng.choice(["Ann", "Bo", "Cy", "Dee"])
        q = f"{who} has {a} apples and gets {b} more. How many apples does {who} have now?"
        ans, why = a + b, f"{who} starts with {a} and gets {b}: {a} + {b} = {a + b}."
    return {"question": q, "reasoning": why, "answer": str(ans)}


def arithmetic(n: int, seed: int = 0, max_operand: int = 50) -> list[dict]:
    """n arithmetic problems ``{"question", "reasoning", "answer"}`` (answer as a decimal string)."""
    rng = random.Random(seed)
    return [_problem(rng, max_operand) for _ in range(n)]


def _conversation(p: dict, think: bool) -> list[dict]:
    reply = {"role": "assistant", "content": f"The answer is \\boxed{{{p['answer']}}}."}
    if think:
        reply["reasoning_content"] = f"Let me compute. {p['reasoning']} So the answer is {p['answer']}."
    return [{"role": "user", "content": p["question"]}, reply]


def _tool_conversation(p: dict) -> dict:
    expr = p["reasoning"].split("=")[0].split(":")[-1].strip()
    call = {"name": "calculator", "arguments": {"expression": expr}}
    return {"tools": [CALCULATOR], "messages": [
        {"role": "user", "content": p["question"]},
        {"role": "assistant", "content": "", "reasoning_content": "I will use the calculator.", "tool_calls": [call]},
        {"role": "tool", "content": json.dumps({"result": int(p["answer"])})},
        {"role": "assistant", "content": f"The answer is \\boxed{{{p['answer']}}}.",
         "reasoning_content": f"The calculator says {p['answer']}."}]}


def sft_records(n: int, seed: int = 0, mode: str = "fusion", tool_share: float = 0.05,
                fusion: FusionConfig = FusionConfig()) -> list[dict]:
    """Chat SFT records ``{"messages"[, "tools"]}``.

    Args:
        n: problems to draw (multi-turn fusion samples chain several, so fewer records may result).
        seed: seed of the problems and the mixing.
        mode: "think" (long-CoT cold start: reasoning, no flag), "no_think" (/no_think and empty
            think blocks), or "fusion" (half each, mixed by `fusion.fuse`).
        tool_share: share of records that are a tool-calling conversation (thinking).
        fusion: the fusion mix.
    """
    if mode not in ("think", "no_think", "fusion"):
        raise ValueError(f"mode must be 'think', 'no_think' or 'fusion', got {mode!r}")
    rng = random.Random(seed + 1)
    problems = arithmetic(n, seed)
    tools = [p for p in problems if rng.random() < tool_share]
    plain = [p for p in problems if not any(p is t for t in tools)]
    if mode == "think":
        out = [{"messages": _conversation(p, True)} for p in plain]
    elif mode == "no_think":
        out = [{"messages": set_mode(_conversation(p, False), False)} for p in plain]
    else:
        half = len(plain) // 2
        mixed = fuse([_conversation(p, True) for p in plain[:half]],
                     [_conversation(p, False) for p in plain[half:]], fusion, seed)
        out = [{"messages": m} for m in mixed]
    out += [_tool_conversation(p) for p in tools]
    rng.shuffle(out)
    return out


def prompt_records(n: int, seed: int = 0, modes: str = "mixed") -> list[dict]:
    """RL prompts ``{"messages": [user], "answer"}`` with ``/think`` or ``/no_think`` flags.

    Args:
        n: prompts.
        seed: seed of the problems and flags.
        modes: "think", "no_think", or "mixed" (each prompt flagged at random).
    """
    if modes not in ("think", "no_think", "mixed"):
        raise ValueError(f"modes must be 'think', 'no_think' or 'mixed', got {modes!r}")
    rng = random.Random(seed + 2)
    out = []
    for p in arithmetic(n, seed):
        think = rng.random() < 0.5 if modes == "mixed" else modes == "think"
        flag = "/think" if think else "/no_think"
        out.append({"messages": [{"role": "user", "content": f"{p['question']} {flag}"}], "answer": p["answer"]})
    return out


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> str:
    """Writes records one JSON object per line (a temp file renamed at the end); returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
