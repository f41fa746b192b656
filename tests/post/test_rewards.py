"""Rule-based rewards: answer extraction and matching, think-block format, length, combining."""

import pytest

from qwen3_jax.post import rewards as R


@pytest.mark.parametrize("text,expected", [
    (r"so \boxed{42}.", "42"),
    (r"\boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    (r"\fbox{7}", "7"),
    (r"$\boxed 5$", "5"),
    (r"\boxed{unclosed", None),
    ("no box", None),
])
def test_extract_boxed(text, expected):
    assert R.extract_boxed(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("<think>\nmaybe 3\n</think>\n\nIt is \\boxed{12}.<|im_end|>", "12"),
    ("<think>\n\\boxed{9}\n</think>\n\nI get 4.", "4"),          # reasoning is not searched
    ("First 3 apples, then 5, total 8.", "8"),
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
    ("#### 1,234", "1,234"),
    ("The answer is 17 apples.", "17"),
    ("The answer is: -3.5.", "-3.5"),
    ("The answer is \\frac{3}{4}.", "\\frac{3}{4}"),
    ("ratio 3/4", "3/4"),
    ("no digits here", None),
])
def test_extract_answer(text, expected):
    assert R.extract_answer(text) == expected


@pytest.mark.parametrize("pred,ref", [
    ("42", "42"), ("42.0", "42"), ("0.5", "1/2"), (r"\frac{1}{2}", "0.5"), (r"\dfrac{1}{2}", "1/2"),
    ("1,234", "1234"), ("$7$", "7"), (r"x = 3", "3"), (r"90^\circ", "90"), ("50\\%", "50"),
    (r"\text{Monday}", "Monday"), ("-2", "-2"), (r"-\frac{3}{4}", "-0.75"), ("1e3", "1000"),
    (r"\left(1, 2\right)", "(1,2)"),
])
def test_answers_match(pred, ref):
    assert R.answers_match(pred, ref)


@pytest.mark.parametrize("pred,ref", [
    ("41", "42"), ("0.5", "1/3"), (None, "1"), ("", "1"), ("12", "1,2"), ("Tuesday", "Monday"), ("-2", "2"),
])
def test_answers_differ(pred, ref):
    assert not R.answers_match(pred, ref)


def test_parse_number_rejects_garbage():
    assert R.parse_number("1/0") is None
    assert R.parse_number("abc") is None
    assert R.parse_number(r"\frac{2}{4}") == R.parse_number("0.5")


def test_reference_answer_extraction():
    assert R.reference_answer("She has 3+4 = 7.\n#### 7") == "7"
    assert R.reference_answer(r"so \boxed{\frac{1}{3}}") == r"\frac{1}{3}"
    assert R.reference_answer(" 12 ") == "12"


def test_accuracy_reward():
    prompts = [[{"role": "user", "content": "2+2?"}]] * 4
    completions = ["<think>\nadd\n</think>\n\n\\boxed{4}<|im_end|>", "<think>\n4\n</think>\n\n5",
                   "The answer is 4.", "nothing"]
    assert R.accuracy_reward(prompts, completions, answer=["4", "4", "#### 4", "4"]) == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(R.RewardError, match="'answer' column"):
        R.accuracy_reward(prompts, completions)


THINK_USER = [{"role": "user", "content": "What is 2+2? /think"}]
NOTHINK_USER = [{"role": "user", "content": "What is 2+2? /no_think"}]
FLIP = [{"role": "user", "content": "hi /no_think"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "now 2+2 /think"}]


@pytest.mark.parametrize("prompt,completion,problem", [
    (THINK_USER, "<think>\nadd them\n</think>\n\n4<|im_end|>", None),
    (THINK_USER, "<think>\n\n</think>\n\n4", "empty think block in thinking mode"),
    (NOTHINK_USER, "<think>\n\n</think>\n\n4<|im_end|>", None),
    (NOTHINK_USER, "<think>\nadd\n</think>\n\n4", "non-empty think block under /no_think"),
    (NOTHINK_USER, "4", "no think block"),
    (THINK_USER, "<think>a</think>b<think>c</think>d", "2 <think> and 2 </think> tags (expected one each)"),
    (THINK_USER, "<think>\nunfinished", "1 <think> and 0 </think> tags (expected one each)"),
    (THINK_USER, "sure <think>x</think>4", "text before <think>"),
    (THINK_USER, "<think>\nx\n</think>\n\n<|im_end|>", "empty answer"),
    (FLIP, "<think>\nadd\n</think>\n\n4", None),                              # the last flag wins
    (FLIP, "<think>\n\n</think>\n\n4", "empty think block in thinking mode"),
    ([{"role": "user", "content": "2+2"}], "<think>\nadd\n</think>\n\n4", None),  # thinking by default
    ("<|im_start|>user\n2+2 /no_think<|im_end|>\n<|im_start|>assistant\n", "<think>\n\n</think>\n\n4", None),
    ("<|im_start|>user\n2+2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", "4", None),
    ("<|im_start|>user\n2+2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", "<think>x</think>4",
     "a think block after a pre-filled empty one"),
])
def test_format_problem(prompt, completion, problem):
    assert R.format_problem(prompt, completion) == problem
    assert R.format_reward([prompt], [completion]) == [float(problem is None)]


def test_split_reply():
    assert R.split_reply("<think>\nr\n</think>\n\nans<|im_end|>") == ("r", "ans")
    assert R.split_reply("just text") == (None, "just text")


def test_length_penalty():
    fn = R.length_penalty(max_tokens=10, buffer=4)
    ids = [[0] * n for n in (3, 6, 8, 10, 12)]
    assert fn([None] * 5, [""] * 5, completion_ids=ids) == [0.0, 0.0, -0.5, -1.0, -1.0]
    with pytest.raises(R.RewardError, match="completion_ids"):
        fn([None], [""])
    with pytest.raises(ValueError, match="buffer"):
        R.length_penalty(10, 0)


def test_combine_weights_and_logging():
    prompts = [NOTHINK_USER, NOTHINK_USER]
    completions = ["<think>\n\n</think>\n\n4", "<think>\nx\n</think>\n\n5"]
    total, per = R.combine([R.accuracy_reward, R.format_reward], prompts, completions, weights=[1.0, 0.5],
                           answer=["4", "4"])
    assert per == {"accuracy_reward": [1.0, 0.0], "format_reward": [1.0, 0.0]}
    assert total == [1.5, 0.0]
    total, _ = R.combine({"acc": R.accuracy_reward, "fmt": R.format_reward}, prompts, completions,
                         weights={"fmt": 2.0}, answer=["4", "4"])
    assert total == [3.0, 0.0]


def test_combine_errors_name_the_function():
    p, c = [THINK_USER] * 2, ["a", "b"]

    def boom(prompts, completions, **kw):
        raise KeyError("oops")

    def short(prompts, completions, **kw):
        return [1.0]

    def nan(prompts, completions, **kw):
        return [1.0, float("nan")]

    def text(prompts, completions, **kw):
        return ["x", "y"]

    with pytest.raises(R.RewardError, match="'boom' raised KeyError"):
        R.combine([boom], p, c)
    with pytest.raises(R.RewardError, match="'short' returned 1 values for 2 completions"):
        R.combine([short], p, c)
    with pytest.raises(R.RewardError, match="'nan' returned a non-finite value for completion 1"):
        R.combine([nan], p, c)
    with pytest.raises(R.RewardError, match="'text' must return a list of floats"):
        R.combine([text], p, c)
    with pytest.raises(R.RewardError, match="2 reward weights for 1 reward functions"):
        R.combine([short], p, c, weights=[1, 2])
    with pytest.raises(R.RewardError, match="column 'answer' has 1 entries for 2 completions"):
        R.combine([R.accuracy_reward], p, c, answer=["1"])
    with pytest.raises(R.RewardError, match="unknown reward functions"):
        R.combine({"a": R.format_reward}, p, c, weights={"b": 1.0})


@pytest.mark.parametrize("prompt", [THINK_USER, NOTHINK_USER, FLIP])
def test_hard_switch_expects_a_plain_answer(prompt):
    """``enable_thinking=False`` pre-fills the empty block whatever the soft flags say: the reply is the answer."""
    assert R.format_problem(prompt, "4<|im_end|>", enable_thinking=False) is None
    assert R.format_problem(prompt, "<think>\n\n</think>\n\n4", enable_thinking=False) == \
        "a think block after a pre-filled empty one"
    assert R.format_reward([prompt, prompt], ["4", "4"], enable_thinking=[False, True]) == [1.0, 0.0]
