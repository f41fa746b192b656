"""The shipped demo model (qwen3_jax/demo_model, built by experiments/hybrid_thinking/run.py) meets
the checks of its issue on freshly generated problems."""

import os

import pytest

import qwen3_jax
from qwen3_jax.generate.chat import STOP_THINKING, STOP_THINKING_PREFIX
from qwen3_jax.api import demo_dir
from qwen3_jax.post import arithmetic as A
from qwen3_jax.post.arithmetic_eval import accuracy_table, answer_of, generate

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(demo_dir(), "config.json")),
                                reason="no demo model shipped")


@pytest.fixture(scope="module")
def model():
    return qwen3_jax.load("demo")


def _ask(items, flag=None):
    return [[{"role": "user", "content": p.question + (f" {flag}" if flag else "")}] for p in items]


def test_loads_with_its_tokenizer_and_chats(model):
    assert model.tokenizer is not None and len(model.tokenizer) == model.config.vocab_size
    r = model.chat([{"role": "user", "content": "What is 4821 + 379?"}], max_new_tokens=200, seed=0)
    assert r.reasoning.startswith("4821+0379") and answer_of(r.content) is not None


@pytest.fixture(scope="module")
def accuracies(model):
    items = A.problems(100, seed=20240, split="any", wording=0)  # fresh: not the report's held-out draw
    think = accuracy_table(items, generate(model, model.tokenizer, _ask(items), True, seed=1, batch=100))
    no_think = accuracy_table(items, generate(model, model.tokenizer, _ask(items, "/no_think"), False, seed=1,
                                              batch=100))
    return think, no_think


def test_thinking_beats_non_thinking(accuracies):
    think, no_think = accuracies
    assert think["accuracy"] > no_think["accuracy"], (think, no_think)
    assert think["accuracy"] >= 0.5, think  # far above chance: the shipped model really computes


def test_thinking_reaches_90_percent(accuracies):
    think, _ = accuracies
    assert think["accuracy"] >= 0.9, think


@pytest.mark.parametrize("think", [True, False])
def test_think_follow_single_and_multi_turn(model, think):
    flag, other = ("/think", "/no_think") if think else ("/no_think", "/think")
    items = A.problems(80, seed=777 + think, split="any", wording=0)
    chats = [_ask([a], other)[0] + [{"role": "assistant", "content": str(a.answer)}] + _ask([b], flag)[0]
             for a, b in zip(items[:40], items[40:])]
    replies = generate(model, model.tokenizer, _ask(items[:40], flag) + chats, think, seed=2, batch=80)
    for part in (replies[:40], replies[40:]):  # single turns, then second turns after the other flag
        obeyed = [bool(r.reasoning) if think else (r.closed and not r.reasoning) for r in part]
        assert sum(obeyed) / len(obeyed) >= 0.95, (flag, part[:3])


def test_budget_of_8_tokens_still_answers_an_integer(model):
    items = A.problems(20, seed=99, split="any", wording=0)
    replies = generate(model, model.tokenizer, _ask(items), True, budget=8, seed=4, batch=20)
    assert all(answer_of(r.content) is not None for r in replies), [r.content for r in replies]
    forced = len(model.tokenizer.encode(STOP_THINKING_PREFIX + STOP_THINKING))
    assert all(r.think_tokens <= 8 + forced for r in replies)  # the cut thought plus the stop-thinking text
