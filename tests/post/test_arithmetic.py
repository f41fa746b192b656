"""The demo model's task: problems, the column-method reasoning, splits, data builders, answer parsing."""

import random

import numpy as np
import pytest

from qwen3_jax.post import arithmetic as A
from qwen3_jax.post import arithmetic_data as D
from qwen3_jax.post.arithmetic_eval import Reply, accuracy_table, answer_of


def test_column_method_examples_from_the_issue():
    assert A.column_method(4821, "+", 379).split("\n") == [
        "4821+0379|0000|1+9+0=10", "0482+0037|0000|2+7+1=10", "0048+0003|0000|8+3+1=12",
        "0004+0000|2000|4+0+1=05", "=05200"]
    assert A.column_method(907, "-", 4518).split("\n") == [
        "0907-4518", "0<4,9>5,0<1,7<8:<", "-(4518-0907)", "4518-0907|0000|8-7-0=01", "0451-0090|1000|1-0-0=01",
        "0045-0009|1100|5-9-0=16", "0004-0000|6110|4-0-1=03", "=-3611"]
    lines = A.column_method(37, "*", 86).split("\n")
    assert lines[:7] == ["37*86", "7*6+0=42", "3*6+4=22", "=0222", "7*8+0=56", "3*8+5=29", "=2960"]
    assert lines[7] == "0222+2960|0000|2+0+0=02" and lines[-1] == "=03182"


def test_register_lines_restate_the_line_above():
    """Each column line's operands and register are the line above's shifted right by one digit."""
    for p in A.problems(200, 5, "any", op="+"):
        rows = [line.split("|") for line in p.reasoning().split("\n")[:-1]]
        for (ops0, reg0, step0), (ops1, reg1, _) in zip(rows, rows[1:]):
            x0, y0 = ops0.split("+")
            assert ops1 == f"0{x0[:-1]}+0{y0[:-1]}" and reg1 == step0[-1] + reg0[:-1]
            assert step0.startswith(f"{x0[-1]}+{y0[-1]}+")


@pytest.mark.parametrize("op", A.OPS)
def test_reasoning_spells_the_answer_and_steps_are_true(op):
    rng = random.Random(op)
    for _ in range(300):
        p = A.sample(rng, op=op, split="any")
        text = p.reasoning()
        assert A.result_of(text) == p.answer == eval(f"{p.a}{p.op}{p.b}")
        for line in text.split("\n"):  # every step line "x?y?c=CD" is arithmetic that holds
            line = line.rsplit("|", 1)[-1]
            if "=" in line and not line.startswith("=") and "," not in line:
                lhs, rhs = line.split("=")
                want = int(rhs[1]) - 10 * int(rhs[0]) if "-" in lhs else int(rhs)  # x-y-b = D - 10*B
                assert eval(lhs) == want, line


def test_fixed_width_lines():
    """Lines of a kind have one width whatever the operands (the model copies at fixed offsets)."""
    for op in A.OPS:
        widths = {tuple(len(x) for x in p.reasoning().split("\n")) for p in A.problems(200, 3, "any", op=op)}
        assert len(widths) == 1, op


def test_problem_bounds_and_errors():
    for p in A.problems(500, 1, "any"):
        assert 0 <= p.a < A.LIMIT[p.op] and 0 <= p.b < A.LIMIT[p.op]
    with pytest.raises(ValueError, match="a must be an int in"):
        A.Problem(10_000, "+", 1)
    with pytest.raises(ValueError, match="op must be one of"):
        A.Problem(1, "/", 1)
    with pytest.raises(ValueError, match="digits must lie in"):
        A.sample(random.Random(0), op="*", digits=3)


def test_splits_are_disjoint_and_seeded():
    train = A.problems(400, 0, "train")
    test = A.problems(400, 0, "test")
    assert not any(p.held_out for p in train) and all(p.held_out for p in test)
    assert {(p.a, p.op, p.b) for p in train}.isdisjoint((p.a, p.op, p.b) for p in test)
    assert A.problems(50, 5) == A.problems(50, 5) and A.problems(50, 5) != A.problems(50, 6)
    share = sum(p.held_out for p in A.problems(3000, 2, "any")) / 3000
    assert 0.07 < share < 0.13


def test_canonical_wordings():
    assert A.Problem(4821, "+", 379).question == "What is 4821 + 379?"
    assert A.Problem(907, "-", 4518).question == "What is 907 - 4518?"
    assert A.Problem(37, "*", 86).question == "What is 37 * 86?"


def test_answer_parsing():
    assert A.parse_answer("5200") == 5200 and A.parse_answer(" -3611\n") == -3611
    assert A.parse_answer("The answer is 5200") is None and A.parse_answer("") is None
    assert answer_of(".\n\n42") == 42 and answer_of("x42") is None


def test_accuracy_table_buckets():
    items = [A.Problem(12, "+", 3), A.Problem(1234, "+", 1), A.Problem(5, "*", 7)]
    replies = [Reply("", c, 0, "stop") for c in ("15", "0", "35")]
    t = accuracy_table(items, replies)
    assert t["accuracy"] == pytest.approx(2 / 3)
    assert t["by_op"] == {"add": 0.5, "mul": 1.0}
    assert t["by_bucket"] == {"add-2d": 1.0, "add-4d": 0.0, "mul-1d": 1.0}


def test_data_builders():
    from qwen3_jax.generate.chat import STOP_THINKING
    from qwen3_jax.post.sft_data import tokenize_chat
    from qwen3_jax.text.train_bpe import train_bpe

    texts = D.pretraining_texts(300, seed=0)
    assert any(t.startswith("Question: What is") for t in texts) and any("Question" not in t for t in texts)
    tok = train_bpe(texts + [STOP_THINKING.replace("</think>", "")], 320)
    p = A.Problem(4821, "+", 379)
    s = tokenize_chat(D.thinking_conversation(p), tok)
    assert "<think>\n4821+0379" in s.text and s.text.rstrip().endswith("5200<|im_end|>")
    fused = D.fusion_conversations(A.problems(60, 0), seed=0)
    flat = [m["content"] for c in fused for m in c if m["role"] in ("user", "system")]
    assert any("/no_think" in f for f in flat) and any("/think" in f.replace("/no_think", "") for f in flat)
    assert any(sum(m["role"] == "assistant" for m in c) > 1 for c in fused)
    b = D.budget_sample(p, tok, 8)
    text = tok.decode(b.ids)
    assert STOP_THINKING in text and text.rstrip().endswith("5200<|im_end|>")
    cut = text.split("<think>")[1].split("\n\nConsidering")[0]
    assert len(tok.encode(cut)) == 8
    masked = tok.decode(b.ids[b.loss_mask])
    assert "Considering" not in masked and "5200<|im_end|>" in masked
    assert np.asarray(b.loss_mask).dtype == bool
