"""The demo model's task: integer arithmetic asked in plain English, with a column-method reasoning.

Problems are addition and subtraction of non-negative integers below 10,000 and multiplication
of integers below 100 (``What is 4821 + 379?``, ``What is 907 - 4518?``, ``What is 37 * 86?``).
The reply's content is the integer alone (``5200``); the thinking is a written-out column
method designed for a small transformer:

* every line has a fixed width (operands are zero-padded to 4 digits, multiplication factors to
  2), so the digit a step needs always sits at the same distance back: the model only has to
  learn fixed-offset copies plus one-digit facts;
* columns go right to left, each line ``x+y+c=CD`` (or ``x-y-b=BD``, ``x*y+c=CD``) states the
  carried / borrowed digit that flows into the next line;
* the last line (``=05200``) writes the result's digits in reading order, so the answer is that
  line without its leading zeros.

Each column is one line that restates what it uses: the operands shifted right by the columns
done so far (zeros shifted in), the result register (the digits found so far, newest first), then
the column's step ``x+y+c=CD`` (``x-y-b=BD`` for subtraction: ``B`` the borrow out). The operands'
last digits, the carry and every register digit are copies of the line above at a fixed distance,
so the model never has to count columns. Addition ``4821 + 379``::

    4821+0379|0000|1+9+0=10
    0482+0037|0000|2+7+1=10
    0048+0003|0000|8+3+1=12
    0004+0000|2000|4+0+1=05
    =05200

Subtraction first compares the padded operands digit by digit from the
left (``0<4``); the sign is the first unequal comparison (``=`` when all are equal), and the column
subtraction always takes the smaller number from the larger: ``907 - 4518``::

    0907-4518
    0<4,9>5,0<1,7<8:<
    -(4518-0907)
    4518-0907|0000|8-7-0=01
    0451-0090|1000|1-0-0=01
    0045-0009|1100|5-9-0=16
    0004-0000|6110|4-0-1=03
    =-3611

Multiplication writes one partial product per digit of the second factor (``x*y+c=CD`` lines),
then adds the partials with the addition columns: ``37 * 86``::

    37*86
    7*6+0=42
    3*6+4=22
    =0222
    7*8+0=56
    3*8+5=29
    =2960
    0222+2960|0000|2+0+0=02
    ...
    =03182

Everything is a pure function of (seed, index) so data sets are reproducible; ``split`` keeps a
held-out set of problems (a hash of the operands) out of every training set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from typing import Iterator, Sequence

OPS = ("+", "-", "*")
WORD = {"+": "add", "-": "sub", "*": "mul"}
# The three forms the checks use come first; the others add variety to the training data.
WORDINGS = {
    "+": ("What is {a} + {b}?", "What is {a} plus {b}?", "Compute {a} + {b}.", "Add {a} and {b}."),
    "-": ("What is {a} - {b}?", "What is {a} minus {b}?", "Compute {a} - {b}.", "Subtract {b} from {a}."),
    "*": ("What is {a} * {b}?", "What is {a} times {b}?", "Compute {a} * {b}.", "Multiply {a} by {b}."),
}
LIMIT = {"+": 10_000, "-": 10_000, "*": 100}
HELD_OUT_SHARE = 10  # one problem in 10 (by hash) is held out


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem ``a op b`` and the wording index of its question."""

    a: int
    op: str
    b: int
    wording: int = 0

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {self.op!r}")
        for name, v in (("a", self.a), ("b", self.b)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < LIMIT[self.op]:
                raise ValueError(f"{name} must be an int in [0, {LIMIT[self.op]}) for {self.op!r}, got {v!r}")
        if not 0 <= self.wording < len(WORDINGS[self.op]):
            raise ValueError(f"wording must lie in [0, {len(WORDINGS[self.op])}), got {self.wording}")

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b if self.op == "-" else self.a * self.b

    @property
    def question(self) -> str:
        return WORDINGS[self.op][self.wording].format(a=self.a, b=self.b)

    @property
    def digits(self) -> int:
        """Digits of the longer operand (the report's difficulty axis)."""
        return max(len(str(self.a)), len(str(self.b)))

    @property
    def held_out(self) -> bool:
        return is_held_out(self.a, self.op, self.b)

    def reasoning(self) -> str:
        """The column-method thinking text (see the module docstring)."""
        return column_method(self.a, self.op, self.b)


def is_held_out(a: int, op: str, b: int) -> bool:
    """Whether ``a op b`` belongs to the held-out split (independent of wording)."""
    h = hashlib.blake2b(f"{a}{op}{b}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "little") % HELD_OUT_SHARE == 0


def _columns(x: str, y: str, op: str, step) -> list[str]:
    """Column lines of two equal-width digit strings in the register layout.

    Line k is ``{x >> k}{op}{y >> k}|{R}|{dx}{op}{dy}{op}{c}={C}{D}``: the operands shifted right by k
    digits (zeros shifted in), the result register ``R`` (the result digits so far, newest first,
    shifted right), and column k: the operands' last digits, the incoming carry (or borrow) ``c``,
    the outgoing one ``C`` and the digit ``D`` (``step(dx, dy, c) -> (C, D)``). The last line
    ``={C}{D}{R}`` spells the result. Every digit is a copy from a fixed distance back (the same
    slot of the line above, one slot right, or the line above's ``C`` / ``D``) or a one-digit fact.
    """
    w, carry, reg, lines = len(x), 0, "0" * len(x), []
    for _ in range(w):
        c_out, d = step(int(x[-1]), int(y[-1]), carry)
        lines.append(f"{x}{op}{y}|{reg}|{x[-1]}{op}{y[-1]}{op}{carry}={c_out}{d}")
        x, y, reg, carry = "0" + x[:-1], "0" + y[:-1], str(d) + reg[:-1], c_out
    lines.append(f"={carry}{reg}")
    return lines


def _add_step(dx: int, dy: int, c: int) -> tuple[int, int]:
    s = dx + dy + c
    return s // 10, s % 10


def _sub_step(dx: int, dy: int, b: int) -> tuple[int, int]:
    d = dx - dy - b
    return (1, d + 10) if d < 0 else (0, d)


def _add_lines(x: str, y: str) -> list[str]:
    """Column addition of two equal-width digit strings: step lines and the result line."""
    return _columns(x, y, "+", _add_step)


def _sub_lines(a: int, b: int) -> list[str]:
    x, y = f"{a:04d}", f"{b:04d}"
    cmp = [f"{dx}{'<' if dx < dy else '>' if dx > dy else '='}{dy}" for dx, dy in zip(x, y)]
    first = next((c[1] for c in cmp if c[1] != "="), "=")
    big, small, sign = (y, x, "-") if first == "<" else (x, y, "+")
    lines = [f"{x}-{y}", ",".join(cmp) + ":" + first, f"{sign}({big}-{small})"]
    cols = _columns(big, small, "-", _sub_step)
    return lines + cols[:-1] + ["=" + sign + cols[-1][2:]]  # the final borrow is 0: big >= small


def _mul_lines(a: int, b: int) -> list[str]:
    x, y = f"{a:02d}", f"{b:02d}"
    lines, partials = [f"{x}*{y}"], []
    for shift, dy in enumerate(reversed(y)):
        carry, out = 0, []
        for dx in reversed(x):
            p = int(dx) * int(dy) + carry
            lines.append(f"{dx}*{dy}+{carry}={p // 10}{p % 10}")
            carry, out = p // 10, [str(p % 10)] + out
        part = (str(carry) + "".join(out) + "0" * shift)[-4:].rjust(4, "0")
        lines.append("=" + part)
        partials.append(part)
    return lines + _add_lines(*partials)


def column_method(a: int, op: str, b: int) -> str:
    """The thinking text for ``a op b``; its last line spells the answer (see the module docstring)."""
    if op == "+":
        lines = _add_lines(f"{a:04d}", f"{b:04d}")
    elif op == "-":
        lines = _sub_lines(a, b)
    elif op == "*":
        lines = _mul_lines(a, b)
    else:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    return "\n".join(lines)


def result_of(reasoning: str) -> int | None:
    """The integer the last ``=`` line of a column-method text spells, or None."""
    last = reasoning.strip().rsplit("\n", 1)[-1]
    m = re.fullmatch(r"=([+-]?)(\d+)", last)
    if not m:
        return None
    v = int(m.group(2))
    return -v if m.group(1) == "-" else v


def sample(rng: random.Random, op: str | None = None, digits: int | None = None, wording: int | None = None,
           split: str = "train") -> Problem:
    """One random problem of the split ("train", "test" = held out, or "any").

    The operation is uniform over ``OPS`` unless given; the longer operand's digit count is uniform
    (1-4 for + and -, 1-2 for *) unless given, and the other operand's count uniform up to 4 (or 2),
    so short and long numbers are equally common. ``wording`` None: the canonical form ("What is
    a op b?") half of the time, another wording otherwise.
    """
    if split not in ("train", "test", "any"):
        raise ValueError(f"split must be 'train', 'test' or 'any', got {split!r}")
    op = op or rng.choice(OPS)
    most = 2 if op == "*" else 4
    if digits is not None and not 1 <= digits <= most:
        raise ValueError(f"digits must lie in [1, {most}] for {op!r}, got {digits}")
    if wording is None:
        wording = 0 if rng.random() < 0.5 else rng.randrange(1, len(WORDINGS[op]))
    while True:
        d = digits or rng.randint(1, most)
        other = rng.randint(1, most if digits is None else d)
        da, db = (d, other) if rng.random() < 0.5 else (other, d)
        num = lambda n: rng.randrange(0 if n == 1 else 10 ** (n - 1), 10 ** n)  # noqa: E731
        p = Problem(num(da), op, num(db), wording)
        if split == "any" or p.held_out == (split == "test"):
            return p


def problems(n: int, seed: int = 0, split: str = "train", op: str | None = None, digits: int | None = None,
             wording: int | None = None) -> list[Problem]:
    """``n`` problems drawn with ``random.Random(seed)`` (see `sample`)."""
    rng = random.Random(seed)
    return [sample(rng, op, digits, wording, split) for _ in range(n)]


def stream(seed: int = 0, split: str = "train") -> Iterator[Problem]:
    """An endless stream of training problems."""
    rng = random.Random(seed)
    while True:
        yield sample(rng, split=split)


def parse_answer(content: str) -> int | None:
    """The reply content as an integer when it is an integer alone (whitespace allowed), else None."""
    m = re.fullmatch(r"\s*(-?\d+)\s*", content or "")
    return int(m.group(1)) if m else None


def is_correct(problem: Problem, content: str) -> bool:
    return parse_answer(content) == problem.answer


def buckets(items: Sequence[Problem]) -> list[str]:
    """The report's bucket names, e.g. ``add-4d``."""
    return [f"{WORD[p.op]}-{p.digits}d" for p in items]
