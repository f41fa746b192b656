"""Evaluation of a hybrid-thinking model on the arithmetic task (`post.arithmetic`).

    report = evaluate(model, tokenizer, n=200, seed=1)
    report["think"]["accuracy"], report["no_think"]["by_bucket"]["mul-2d"], report["think_follow"]

Measures, on held-out problems with each mode's sampling preset (thinking: temperature 0.6,
top-p 0.95, top-k 20; non-thinking: 0.7 / 0.8 / 20):

* accuracy in thinking mode (``/think``) and non-thinking mode (``/no_think``), overall, per
  operation and per operation and digit count (``add-4d``);
* ThinkFollow: the share of ``/think`` replies with a non-empty think block and of ``/no_think``
  replies with an empty one, in single turns and in the second turn of a chat whose first turn
  used the other flag;
* the mean thinking length (tokens before ``</think>``) of the thinking replies;
* accuracy against the thinking budget (the Qwen3 report's Figure 2 at small scale).

Replies are generated in fixed-size batches on the model's compiled engine, so one evaluation
compiles a handful of programs.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Sequence

from qwen3_jax.post.arithmetic import WORD, Problem, buckets, parse_answer, problems as draw_problems

BUDGETS = (0, 8, 16, 32, 64, None)
MAX_NEW_TOKENS = 224  # the longest thought (multiplication) is 156 tokens with the 384-id tokenizer


@dataclasses.dataclass(frozen=True)
class Reply:
    reasoning: str
    content: str
    think_tokens: int
    finish: str
    closed: bool = True  # the reply closed a think block (</think>)


def answer_of(content: str) -> int | None:
    """The integer a reply answers: its content, also after the stop-thinking text's final period
    (the budget's forced text ends with ``</think>.``)."""
    c = content.strip()
    return parse_answer(c[1:] if c.startswith(".") else c)


def generate(model, tokenizer, conversations: Sequence[Sequence[dict]], thinking: bool, budget: int | None = None,
             seed: int = 0, batch: int = 32, max_new_tokens: int = MAX_NEW_TOKENS) -> list[Reply]:
    """One reply per conversation with the mode's sampling preset (`thinking`) and an optional budget."""
    from qwen3_jax.generate.chat import STOP_THINKING, STOP_THINKING_PREFIX
    from qwen3_jax.generate.engine import Engine, ThinkingBudget
    from qwen3_jax.generate.sampling import NON_THINKING, THINKING
    from qwen3_jax.text.parse import parse

    engine = Engine.for_model(model)
    prompts = [tokenizer.apply_chat_template(list(c), add_generation_prompt=True, tokenize=True)
               for c in conversations]
    limit = None
    if budget is not None:
        limit = ThinkingBudget(int(budget), tuple(tokenizer.encode(STOP_THINKING_PREFIX + STOP_THINKING)),
                               tokenizer.think_id, tokenizer.end_think_id)
    out: list[Reply] = []
    batch = max(1, min(batch, len(prompts)))
    for start in range(0, len(prompts), batch):
        rows = prompts[start:start + batch]
        pad = batch - len(rows)
        rows = rows + [rows[-1]] * pad  # one batch shape: one compiled program
        sampling = (THINKING if thinking else NON_THINKING).replace(seed=seed + start)
        res = engine.generate(rows, max_new_tokens, sampling, stop_tokens=tokenizer.eos_token_ids,
                              thinking=limit, tokenizer_size=len(tokenizer))
        for ids, finish in list(zip(res.tokens, res.finish_reasons))[:len(rows) - pad]:
            parsed = parse(ids, tokenizer=tokenizer)
            end = ids.index(tokenizer.end_think_id) if tokenizer.end_think_id in ids else len(ids)
            think_tokens = max(0, end - (1 if ids and ids[0] == tokenizer.think_id else 0))
            out.append(Reply(parsed.reasoning.strip(), parsed.content, think_tokens, finish,
                             tokenizer.end_think_id in ids))
    return out


def _question(p: Problem, flag: str | None) -> list[dict]:
    return [{"role": "user", "content": p.question if flag is None else f"{p.question} {flag}"}]


def accuracy_table(items: Sequence[Problem], replies: Sequence[Reply]) -> dict:
    """{"accuracy", "by_op", "by_bucket", "n"} of the replies to ``items``."""
    hits: dict[str, list[int]] = defaultdict(list)
    for p, r, b in zip(items, replies, buckets(items)):
        ok = int(answer_of(r.content) == p.answer)
        hits["all"].append(ok)
        hits["op:" + WORD[p.op]].append(ok)
        hits["bucket:" + b].append(ok)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {"accuracy": mean(hits["all"]), "n": len(hits["all"]),
            "by_op": {k[3:]: mean(v) for k, v in sorted(hits.items()) if k.startswith("op:")},
            "by_bucket": {k[7:]: mean(v) for k, v in sorted(hits.items()) if k.startswith("bucket:")}}


def think_follow(model, tokenizer, n: int, seed: int = 0, batch: int = 32) -> dict:
    """ThinkFollow rates: single turns and the second turn of two-turn chats that switch flags."""
    items = draw_problems(2 * n, seed=seed + 101, split="test", wording=0)
    first, second = items[:n], items[n:]
    rates = {}
    for think in (True, False):
        flag, other = ("/think", "/no_think") if think else ("/no_think", "/think")
        single = generate(model, tokenizer, [_question(p, flag) for p in first], think, seed=seed, batch=batch)
        chats = [_question(a, other) + [{"role": "assistant", "content": str(a.answer)}] + _question(b, flag)
                 for a, b in zip(first, second)]
        multi = generate(model, tokenizer, chats, think, seed=seed + 7, batch=batch)
        # /think: a non-empty think block; /no_think: an empty one (present, so the format holds).
        obeys = (lambda r: bool(r.reasoning)) if think else (lambda r: r.closed and not r.reasoning)
        name = "think" if think else "no_think"
        rates[f"{name}_single"] = sum(map(obeys, single)) / n
        rates[f"{name}_multi"] = sum(map(obeys, multi)) / n
    return rates


def budget_curve(model, tokenizer, items: Sequence[Problem], budgets: Sequence[int | None] = BUDGETS,
                 seed: int = 0, batch: int = 32) -> list[dict]:
    """Thinking-mode accuracy at each thinking budget (None: unlimited)."""
    out = []
    for b in budgets:
        replies = generate(model, tokenizer, [_question(p, None) for p in items], True, budget=b, seed=seed,
                           batch=batch)
        out.append({"budget": b, "accuracy": accuracy_table(items, replies)["accuracy"],
                    "integer_answers": sum(answer_of(r.content) is not None for r in replies) / len(replies),
                    "mean_think_tokens": sum(r.think_tokens for r in replies) / len(replies)})
    return out


def evaluate(model, tokenizer, n: int = 200, seed: int = 1, follow_n: int | None = None,
             budgets: Sequence[int | None] | None = BUDGETS, budget_n: int | None = None, batch: int = 32) -> dict:
    """The report's numbers on ``n`` held-out problems (canonical wording); see the module docstring."""
    items = draw_problems(n, seed=seed, split="test", wording=0)
    report = {}
    for think in (True, False):
        flag = "/think" if think else "/no_think"
        replies = generate(model, tokenizer, [_question(p, flag) for p in items], think, seed=seed, batch=batch)
        table = accuracy_table(items, replies)
        table["mean_think_tokens"] = sum(r.think_tokens for r in replies) / n
        table["empty_think"] = sum(r.closed and not r.reasoning for r in replies) / n
        report["think" if think else "no_think"] = table
    report["think_follow"] = think_follow(model, tokenizer, follow_n or max(1, n // 2), seed, batch)
    if budgets:
        report["budget"] = budget_curve(model, tokenizer, items[:budget_n or n], budgets, seed, batch)
    return report
