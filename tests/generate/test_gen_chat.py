"""Chat on the tiny random preset with the real tokenizer: thinking budget, soft switch, streaming."""

import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.generate import NON_THINKING, THINKING, Engine, Sampling, ThinkingBudget
from qwen3_jax.generate.chat import STOP_THINKING, chat, chat_stream, prepare
from qwen3_jax.text.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.qwen3()


@pytest.fixture(scope="module")
def model(tok):
    m = qwen3_jax.load("tiny-dense")
    m.tokenizer = tok
    return m


def test_thinking_budget_inserts_stop_text_then_answers(model, tok):
    budget = 5
    forced = tuple(tok.encode("\n\n" + STOP_THINKING))
    prompt = tok.apply_chat_template([{"role": "user", "content": "Why is the sky blue?"}],
                                     add_generation_prompt=True, tokenize=True) + tok.encode("<think>\n")
    run = Engine.for_model(model).start([prompt], max_new_tokens=40, sampling=THINKING.replace(seed=3),
                                        stop_tokens=[], tokenizer_size=len(tok),
                                        thinking=ThinkingBudget(budget, forced, tok.think_id, tok.end_think_id))
    out = run.advance().result().tokens[0]
    assert len(out) == 40
    assert tok.end_think_id not in out[:budget]
    assert tuple(out[budget:budget + len(forced)]) == forced
    assert out.count(tok.end_think_id) == 1
    text = tok.decode(out)
    assert STOP_THINKING in text
    assert len(out) > budget + len(forced)  # the answer goes on after the inserted text
    assert max(out) < len(tok)


def test_no_budget_no_insertion(model, tok):
    prompt = tok.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n")
    out = model.generate([prompt], max_new_tokens=20, sampling=THINKING, stop_tokens=[])[0]
    assert "Considering the limited time" not in tok.decode(out)


def test_soft_switch_renders_empty_think_block_and_picks_non_thinking(model, tok):
    _, ids, thinking, sampling, _ = prepare(model, [{"role": "user", "content": "Hello /no_think"}])
    assert not thinking and sampling == NON_THINKING
    assert tok.decode(ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    _, ids, thinking, sampling, _ = prepare(model, [{"role": "user", "content": "Hello /no_think"},
                                                    {"role": "assistant", "content": "Hi"},
                                                    {"role": "user", "content": "Think again /think"}])
    assert thinking and sampling == THINKING
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")
    _, _, thinking, sampling, _ = prepare(model, [{"role": "user", "content": "Hello"}], enable_thinking=False)
    assert not thinking and sampling == NON_THINKING
    # The user's own values win over the preset.
    _, _, _, sampling, _ = prepare(model, [{"role": "user", "content": "x"}], temperature=0.2)
    assert sampling == THINKING.replace(temperature=0.2)


def test_greedy_in_thinking_mode_warns(model):
    with pytest.warns(UserWarning, match="greedy"):
        prepare(model, [{"role": "user", "content": "x"}], sampling=Sampling(temperature=0))


def test_chat_and_stream_agree(model, tok):
    msgs = [{"role": "user", "content": "Say something."}]
    out = chat(model, msgs, max_new_tokens=24, seed=5, stop_tokens=[])
    assert out.usage.prompt_tokens == len(out.prompt_ids)
    assert out.usage.completion_tokens == len(out.ids) == 24
    assert out.finish_reason == "length" and out.thinking
    events = list(chat_stream(model, msgs, max_new_tokens=24, seed=5, stop_tokens=[]))
    assert events[-1].kind == "done"
    final = events[-1].result
    assert final.ids == out.ids
    text = {"reasoning": "", "content": ""}
    for e in events[:-1]:
        if e.kind == "retract":
            text["content"] = ""
        elif e.kind in text:
            text[e.kind] += e.text
    assert text["content"] == final.content and text["reasoning"] == final.reasoning
    d = out.to_dict()
    assert set(d["usage"]) >= {"prompt_tokens", "reasoning_tokens", "content_tokens"}


def test_stops_per_row(model, tok):
    # Greedy twice from the same prompt: the first token becomes a stop token for one call only.
    prompt = tok.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    free = model.generate([prompt, prompt[:-1]], max_new_tokens=12, stop_tokens=[])
    stop = free[0][3]
    out = model.generate([prompt, prompt[:-1]], max_new_tokens=12, stop_tokens=[stop])
    assert out[0] == free[0][: free[0].index(stop) + 1]
    assert out[1] == (free[1][: free[1].index(stop) + 1] if stop in free[1] else free[1])


def test_prompt_too_long_is_refused(model):
    n = model.config.max_position_embeddings
    with pytest.raises(ValueError, match=r"1 too many"):
        model.generate([[1] * n], max_new_tokens=4)
    with pytest.raises(ValueError, match=r"101 too many"):
        model.generate([[1] * (n + 100)], max_new_tokens=4)


def test_prompt_lengths_share_compiled_programs(model):
    engine = Engine(model)
    engine.generate([[5] * 3], max_new_tokens=8, stop_tokens=[])
    before = engine.compiled_programs()
    for n in (4, 7, 11, 16):  # same 16-token bucket, same batch bucket
        engine.generate([[5] * n], max_new_tokens=8, stop_tokens=[])
    assert engine.compiled_programs() == before == 2


def test_penalties_in_the_loop(model, tok):
    prompt = tok.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    plain = model.generate([prompt], max_new_tokens=24, stop_tokens=[])[0]
    assert len(set(plain)) < len(plain)  # the random model repeats itself greedily
    out = model.generate([prompt], max_new_tokens=24, stop_tokens=[],
                         sampling=Sampling(temperature=0, repetition_penalty=1e6))[0]
    assert len(set(out)) == len(out) and not set(out) & set(prompt)
    out = model.generate([prompt], max_new_tokens=24, stop_tokens=[],
                         sampling=Sampling(temperature=0, presence_penalty=2.0))[0]
    assert out != plain
