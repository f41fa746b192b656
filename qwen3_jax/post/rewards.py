"""Rule-based rewards for reasoning RL: answer match, think-block format, length.

A reward function is plain Python::

    fn(prompts, completions, **columns) -> list[float]      # one float per completion

``prompts`` holds one entry per completion (a message list, or the rendered prompt text),
``completions`` the generated text (special tokens such as ``<|im_end|>`` may be present; they are
ignored), and ``columns`` any per-completion extra data: the dataset's own columns (``answer`` for
the math rewards), ``enable_thinking`` (each prompt's hard switch: False when the empty think
block was pre-filled in the prompt) and, from the GRPO trainer, ``completion_ids`` (token lists). Unknown columns must
be accepted (``**columns``) so several functions can share one call. ``combine`` weighs several
functions into one reward and checks what each one returns.

Shipped rules (Qwen3 report arXiv 2505.09388 §4.2 uses rule-based rewards for verifiable math and
code, §4.3-4.4 format and mode-following rewards):

* ``accuracy_reward``: 1 when the final answer equals the reference (``\\boxed{}`` first, then a
  ``#### n`` or "answer is n" line, then the last number), compared as normalised strings or as
  exact rational numbers ("0.5" == "1/2" == "\\frac{1}{2}"); else 0.
* ``format_reward``: 1 when the reply holds exactly one ``<think>…</think>`` block, at the start,
  followed by a non-empty answer, and the block obeys the requested mode (empty under
  ``/no_think`` or a prefilled empty block, non-empty under thinking); else 0.
* ``length_penalty(max_tokens, buffer)``: 0 up to ``max_tokens - buffer`` tokens, then falling
  linearly to -1 at ``max_tokens`` (the "soft overlong" penalty of DAPO, arXiv 2503.14476).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence

from qwen3_jax.text.chat import _SWITCH, thinking_mode

RewardFn = Callable[..., Sequence[float]]

# Tokens a decoded completion may end with; they carry no content.
_TRAILING_SPECIALS = ("<|im_end|>", "<|endoftext|>")
_EMPTY_THINK_PREFILL = "<think>\n\n</think>\n\n"


class RewardError(ValueError):
    """A reward function that raised, or returned the wrong number or kind of values."""


# ----------------------------------------------------------------------------- reply structure
def strip_specials(text: str) -> str:
    """The completion without trailing end-of-turn tokens."""
    text = text.rstrip()
    changed = True
    while changed:
        changed = False
        for s in _TRAILING_SPECIALS:
            if text.endswith(s):
                text, changed = text[: -len(s)].rstrip(), True
    return text


def split_reply(completion: str) -> tuple[str | None, str]:
    """Splits a reply into (reasoning, answer).

    Args:
        completion: generated text, possibly starting with ``<think>``.

    Returns:
        (the text inside the last think block, or None when there is no closed block; the text
        after the last ``</think>``, or the whole reply when there is none), both stripped.
    """
    text = strip_specials(completion)
    if "</think>" not in text:
        return None, text.strip()
    before, _, after = text.rpartition("</think>")
    return before.rpartition("<think>")[2].strip(), after.strip()


def _wants_thinking(prompt: Any) -> bool:
    """The mode a prompt asks for: a message list, or rendered text (the last flag wins)."""
    if isinstance(prompt, str):
        if prompt.endswith(_EMPTY_THINK_PREFILL):
            return False  # the hard switch pre-filled an empty block
        flags = _SWITCH.findall(prompt)
        return not flags or flags[-1] != "no_"
    if isinstance(prompt, Sequence):
        return thinking_mode(prompt)
    raise RewardError(f"a prompt must be a message list or a string, got {type(prompt).__name__}")


def format_problem(prompt: Any, completion: str, enable_thinking: bool = True) -> str | None:
    """What is wrong with a reply's think-block structure, or None when it is right.

    The reply must open with ``<think>``, hold exactly one ``<think>`` and one ``</think>``, and
    have a non-empty answer after it. When the prompt asks for thinking the block must hold text;
    under ``/no_think`` it must be empty (whitespace only). A rendered prompt that already ends
    with the pre-filled empty block, or any prompt with ``enable_thinking=False`` (the hard
    switch, which pre-fills that block when rendering), expects a reply with no block at all, just
    the answer.

    Args:
        prompt: the conversation (message list) or its rendered text.
        completion: the generated text.
        enable_thinking: the hard switch the prompt was rendered with.

    Returns:
        A short reason ("no think block", ...) or None.
    """
    text = strip_specials(completion).strip()
    if enable_thinking is False or (isinstance(prompt, str) and prompt.endswith(_EMPTY_THINK_PREFILL)):
        if "<think>" in text or "</think>" in text:
            return "a think block after a pre-filled empty one"
        return None if text else "empty answer"
    opens, closes = text.count("<think>"), text.count("</think>")
    if opens == 0 and closes == 0:
        return "no think block"
    if opens != 1 or closes != 1:
        return f"{opens} <think> and {closes} </think> tags (expected one each)"
    if not text.startswith("<think>"):
        return "text before <think>"
    reasoning, answer = split_reply(text)
    if not answer:
        return "empty answer"
    if _wants_thinking(prompt):
        if not reasoning:
            return "empty think block in thinking mode"
    elif reasoning:
        return "non-empty think block under /no_think"
    return None


# ----------------------------------------------------------------------------- answers
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+"
_LAST_NUMBER = re.compile(_NUMBER)
_HASH_ANSWER = re.compile(r"####\s*(.+)")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)


def extract_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if none.

    ``\\boxed 5`` (no braces) gives "5". An unclosed brace gives None.
    """
    best = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*(\{)?", text):
        if m.group(1) is None:
            tail = re.match(r"\s*([^\s$]+)", text[m.end():])
            if tail:
                best = tail.group(1)
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            best = text[m.end(): i - 1]
    return best


def extract_answer(text: str) -> str | None:
    """The final answer of a reply: boxed, then ``#### x``, then "answer is x", then the last number.

    Only the text after ``</think>`` is searched when the reply has a think block.

    Returns:
        The answer text (not yet normalised), or None when nothing looks like an answer.
    """
    _, text = split_reply(text)
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    for pattern in (_HASH_ANSWER, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            line = found[-1].strip().splitlines()[0].rstrip(".").strip() if found[-1].strip() else ""
            if parse_number(line) is not None or "\\" in line:
                return line  # a number or a LaTeX expression as a whole
            number = _LAST_NUMBER.findall(line)
            return number[0] if number else line
    numbers = _LAST_NUMBER.findall(text)
    return numbers[-1] if numbers else None


def reference_answer(reference: str) -> str:
    """The answer inside a reference solution (``\\boxed{}`` or ``#### x``), else the reference itself."""
    boxed = extract_boxed(reference)
    if boxed is not None:
        return boxed
    found = _HASH_ANSWER.findall(reference)
    return found[-1].strip() if found else reference.strip()


_LATEX_DROP = (r"\left", r"\right", r"\!", r"\,", r"\;", r"\:", r"\ ", "$", r"\displaystyle")


def normalize_answer(answer: str) -> str:
    """A canonical spelling of an answer for string comparison.

    Drops ``$``, spacing commands, ``\\left``/``\\right``, ``\\text{..}`` wrappers, degree marks,
    percent signs, thousands separators, a trailing period, a leading "x =", and all whitespace;
    ``\\dfrac``/``\\tfrac`` become ``\\frac``.
    """
    s = answer.strip()
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}", r"\1", s)
    for token in _LATEX_DROP:
        s = s.replace(token, "")
    s = s.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac")
    s = re.sub(r"\^\s*\{?\\circ\}?|°", "", s)
    s = s.replace(r"\%", "").replace("%", "")
    s = re.sub(r"^[A-Za-z]\s*=\s*", "", s)
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    return s


def parse_number(answer: str) -> Fraction | None:
    """An exact rational value of a normalised answer, or None.

    Accepts integers, decimals, scientific notation, ``a/b`` and ``\\frac{a}{b}`` (signs allowed).
    """
    s = normalize_answer(answer)
    m = re.fullmatch(r"(-?)\\frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}", s) or re.fullmatch(r"(-?)\\frac(\d)(\d)", s)
    try:
        if m:
            value = Fraction(m.group(2)) / Fraction(m.group(3))
            return -value if m.group(1) else value
        if re.fullmatch(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?:/-?\d+)?", s):
            return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def answers_match(predicted: str | None, reference: str) -> bool:
    """Whether a predicted answer equals the reference: same normalised text or same exact number."""
    if predicted is None:
        return False
    a, b = normalize_answer(predicted), normalize_answer(reference)
    if a and a == b:
        return True
    x, y = parse_number(a), parse_number(b)
    return x is not None and y is not None and x == y


# ----------------------------------------------------------------------------- reward functions
def accuracy_reward(prompts: Sequence[Any], completions: Sequence[str], answer: Sequence[str] | None = None,
                    **columns: Any) -> list[float]:
    """1.0 when a reply's final answer matches the reference in the ``answer`` column, else 0.0.

    Args:
        prompts: one prompt per completion (unused).
        completions: generated replies.
        answer: reference answers or solutions (``\\boxed{}`` / ``#### x`` are extracted).

    Raises:
        RewardError: without an ``answer`` column.
    """
    if answer is None:
        raise RewardError("accuracy_reward needs an 'answer' column in the prompt data")
    return [float(answers_match(extract_answer(c), reference_answer(str(r))))
            for c, r in zip(completions, answer)]


def format_reward(prompts: Sequence[Any], completions: Sequence[str], enable_thinking: Sequence[bool] | None = None,
                  **columns: Any) -> list[float]:
    """1.0 when the think-block structure obeys the prompt's mode (see ``format_problem``), else 0.0.

    ``enable_thinking`` (a column; default all True) is each prompt's hard switch: a False row
    was rendered with the empty think block pre-filled, so its reply must carry no block.
    """
    modes = [True] * len(completions) if enable_thinking is None else enable_thinking
    return [float(format_problem(p, c, m) is None) for p, c, m in zip(prompts, completions, modes)]


def length_penalty(max_tokens: int, buffer: int) -> RewardFn:
    """A reward function penalising replies near ``max_tokens`` (needs the ``completion_ids`` column).

    Args:
        max_tokens: the generation limit; a reply this long gets -1.
        buffer: the penalty starts at ``max_tokens - buffer`` tokens and grows linearly.

    Returns:
        ``fn(prompts, completions, completion_ids, **columns) -> list[float]`` in [-1, 0].
    """
    if max_tokens < 1 or not 0 < buffer <= max_tokens:
        raise ValueError(f"length_penalty needs max_tokens >= 1 and 0 < buffer <= max_tokens; "
                         f"got max_tokens={max_tokens}, buffer={buffer}")
    start = max_tokens - buffer

    def length_reward(prompts, completions, completion_ids=None, **columns) -> list[float]:
        if completion_ids is None:
            raise RewardError("length_penalty needs the 'completion_ids' column (token lists)")
        return [-min(1.0, max(0.0, (len(ids) - start) / buffer)) for ids in completion_ids]

    length_reward.__name__ = f"length_penalty_{max_tokens}"
    return length_reward


REWARDS: dict[str, RewardFn] = {"accuracy": accuracy_reward, "format": format_reward}


def _name(fn: RewardFn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def combine(functions: Mapping[str, RewardFn] | Sequence[RewardFn], prompts: Sequence[Any],
            completions: Sequence[str], weights: Sequence[float] | Mapping[str, float] | None = None,
            **columns: Sequence[Any]) -> tuple[list[float], dict[str, list[float]]]:
    """Calls several reward functions and adds their outputs with weights.

    Args:
        functions: reward functions, as a name -> function mapping or a list (named by ``__name__``).
        prompts, completions: one entry per completion.
        weights: one weight per function (same order, or by name); None gives 1 each.
        **columns: per-completion columns passed to every function.

    Returns:
        (the weighted sum per completion, {name: that function's values}).

    Raises:
        RewardError: a function raised, or returned something other than one finite float per
            completion; the message names the function.
    """
    named = dict(functions) if isinstance(functions, Mapping) else {_name(f): f for f in functions}
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(named)
        if unknown:
            raise RewardError(f"weights name unknown reward functions {sorted(unknown)}; have {sorted(named)}")
        w = [float(weights.get(k, 1.0)) for k in named]
    else:
        w = [1.0] * len(named) if weights is None else [float(x) for x in weights]
        if len(w) != len(named):
            raise RewardError(f"{len(w)} reward weights for {len(named)} reward functions")
    n = len(completions)
    if len(prompts) != n:
        raise RewardError(f"{len(prompts)} prompts for {n} completions")
    for key, col in columns.items():
        if len(col) != n:
            raise RewardError(f"column {key!r} has {len(col)} entries for {n} completions")
    per_fn: dict[str, list[float]] = {}
    for name, fn in named.items():
        try:
            out = fn(prompts, completions, **columns)
        except RewardError:
            raise
        except Exception as e:
            raise RewardError(f"reward function {name!r} raised {type(e).__name__}: {e}") from e
        try:
            values = [float(v) for v in out]
        except (TypeError, ValueError) as e:
            raise RewardError(f"reward function {name!r} must return a list of floats ({e})") from e
        if len(values) != n:
            raise RewardError(f"reward function {name!r} returned {len(values)} values for {n} completions")
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise RewardError(f"reward function {name!r} returned a non-finite value for completion {bad[0]}")
        per_fn[name] = values
    total = [sum(wi * per_fn[k][i] for wi, k in zip(w, named)) for i in range(n)]
    return total, per_fn
