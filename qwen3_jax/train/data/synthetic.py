"""A tiny deterministic corpus for the tiny training stages, generated here (no download).

Four document kinds over a small vocabulary (a few hundred words, so a tiny model learns it in
minutes):
  general    short English-like stories: people, animals and things doing simple actions;
  reasoning  arithmetic problems with worked, digit-by-digit answers (the stage-2 "reasoning" mix);
  long       long stories that state facts early and ask about them at the end (stage 3, long docs);
  short      the same long-story form, shorter (stage 3's short part of the length mix).

`write_corpus(out_dir)` writes `out_dir/<kind>/part-NNNNN.jsonl` (`{"text": ...}` per line) and a
`manifest.json`; the same arguments always give the same bytes. Command line:
`python -m qwen3_jax.train.data.synthetic OUT_DIR [--seed N] [--scale F]`.

A source path `synthetic:general` (or `:reasoning`, `:long`, `:short`; kind "jsonl") reads the
default corpus, generated into the qwen3_jax cache directory on first use (`resolve`), so the tiny
configs work from any directory without shipping data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

NAMES = ["Ana", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena",
         "Milo", "Nora", "Omar", "Pia"]
ANIMALS = ["cat", "dog", "bird", "fox", "horse", "rabbit", "duck", "goat", "mouse", "owl"]
THINGS = ["ball", "book", "cup", "hat", "box", "kite", "lamp", "key", "coin", "map", "shoe", "drum"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "brown", "small", "big", "old", "new"]
PLACES = ["the park", "the garden", "the school", "the river", "the market", "the forest",
          "the kitchen", "the hill", "the lake", "the farm"]
VERBS_OBJ = ["found", "took", "lost", "saw", "painted", "carried", "hid", "washed", "sold", "bought"]
VERBS_GO = ["walked", "ran", "went", "drove", "swam", "rode"]
TIMES = ["In the morning", "At noon", "In the evening", "Later", "The next day", "After lunch", "At night"]
FEELINGS = ["happy", "sad", "tired", "calm", "proud", "surprised", "hungry"]
KINDS = ("general", "reasoning", "long", "short")


def _pick(rng: np.random.Generator, words: list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def sentence(rng: np.random.Generator, who: str | None = None) -> str:
    """One simple sentence."""
    who = who or _pick(rng, NAMES)
    form = int(rng.integers(5))
    if form == 0:
        return f"{who} {_pick(rng, VERBS_OBJ)} {_a(_pick(rng, COLORS))} {_pick(rng, THINGS)}."
    if form == 1:
        return f"{_pick(rng, TIMES)}, {who} {_pick(rng, VERBS_GO)} to {_pick(rng, PLACES)}."
    if form == 2:
        return f"The {_pick(rng, ANIMALS)} of {who} was {_pick(rng, FEELINGS)}."
    if form == 3:
        return f"{who} saw {_a(_pick(rng, ANIMALS))} near {_pick(rng, PLACES)}."
    return f"{who} gave the {_pick(rng, THINGS)} to {_pick(rng, NAMES)} and felt {_pick(rng, FEELINGS)}."


def general_doc(rng: np.random.Generator) -> str:
    """A short story: 2-10 sentences, mostly about one person."""
    hero = _pick(rng, NAMES)
    n = int(rng.integers(2, 11))
    return " ".join(sentence(rng, hero if rng.random() < 0.7 else None) for _ in range(n))


def _add_worked(a: int, b: int) -> str:
    steps, carry, digits = [], 0, []
    da, db = str(a)[::-1], str(b)[::-1]
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x} + {y}" + (f" + {carry}" if carry else "") + f" = {s}, write {s % 10}"
                     + (", carry 1" if s >= 10 else ""))
        carry, digits = s // 10, digits + [str(s % 10)]
    if carry:
        steps.append("write the last carry 1")
        digits.append("1")
    return "; ".join(steps) + f". So {a} + {b} = {a + b}."


def reasoning_doc(rng: np.random.Generator) -> str:
    """An arithmetic problem with a worked answer."""
    form = int(rng.integers(4))
    if form == 0:
        a, b = int(rng.integers(10, 1000)), int(rng.integers(10, 1000))
        return f"Question: What is {a} + {b}? Answer: {_add_worked(a, b)}"
    if form == 1:
        a, b = int(rng.integers(50, 1000)), int(rng.integers(1, 50))
        return (f"Question: What is {a} - {b}? Answer: {a} - {b} = {a - b}. "
                f"Check: {a - b} + {b} = {a}. So the answer is {a - b}.")
    if form == 2:
        a, b = int(rng.integers(11, 100)), int(rng.integers(2, 10))
        tens, ones = a // 10 * 10, a % 10
        return (f"Question: What is {a} * {b}? Answer: {a} = {tens} + {ones}. {tens} * {b} = {tens * b}. "
                f"{ones} * {b} = {ones * b}. {tens * b} + {ones * b} = {a * b}. So {a} * {b} = {a * b}.")
    who, thing = _pick(rng, NAMES), _pick(rng, THINGS)
    have, buy, give = int(rng.integers(2, 20)), int(rng.integers(1, 10)), int(rng.integers(1, 5))
    return (f"Question: {who} has {have} {thing}s, buys {buy} more and gives {give} away. "
            f"How many {thing}s does {who} have? Answer: {have} + {buy} = {have + buy}. "
            f"{have + buy} - {give} = {have + buy - give}. So {who} has {have + buy - give} {thing}s.")


def story_doc(rng: np.random.Generator, words: tuple[int, int]) -> str:
    """A story of about `words` words that opens with facts and asks about them at the end."""
    target = int(rng.integers(words[0], words[1] + 1))
    people = [str(x) for x in rng.choice(NAMES, size=3, replace=False)]
    facts = {p: (_pick(rng, COLORS), _pick(rng, THINGS), _pick(rng, PLACES)) for p in people}
    parts = [f"{p} has {_a(c)} {t} and lives near {pl}." for p, (c, t, pl) in facts.items()]
    n = sum(len(s.split()) for s in parts)
    while n < target - 20:
        s = sentence(rng, _pick(rng, people) if rng.random() < 0.5 else None)
        parts.append(s)
        n += len(s.split())
    p = _pick(rng, people)
    c, t, pl = facts[p]
    parts.append(f"Question: What does {p} have? Answer: {p} has {_a(c)} {t}. "
                 f"Question: Where does {p} live? Answer: near {pl}.")
    return " ".join(parts)


def generators(long_words: tuple[int, int], short_words: tuple[int, int]) -> dict[str, Callable]:
    return {"general": general_doc, "reasoning": reasoning_doc,
            "long": lambda rng: story_doc(rng, long_words),
            "short": lambda rng: story_doc(rng, short_words)}


def documents(kind: str, n: int, seed: int = 0, long_words: tuple[int, int] = (700, 1400),
              short_words: tuple[int, int] = (150, 600)) -> list[str]:
    """The first `n` documents of one kind; document i depends only on (seed, kind, i)."""
    gen = generators(tuple(long_words), tuple(short_words))[kind]
    k = KINDS.index(kind)
    return [gen(np.random.default_rng([seed, k, i])) for i in range(n)]


DEFAULT_DOCS = {"general": 4000, "reasoning": 3000, "long": 300, "short": 600}


def write_corpus(out_dir: str | os.PathLike, *, seed: int = 0, scale: float = 1.0,
                 docs_per_file: int = 1000, long_words: tuple[int, int] = (700, 1400),
                 short_words: tuple[int, int] = (150, 600)) -> Path:
    """Writes the corpus unless `out_dir` already holds this exact one; returns `out_dir`.

    Writes into a temporary sibling and renames it at the end, so a killed run leaves nothing
    half-written. `scale` multiplies the document counts (`DEFAULT_DOCS`).
    """
    out = Path(out_dir)
    manifest = {"seed": seed, "docs": {k: max(1, int(round(v * scale))) for k, v in DEFAULT_DOCS.items()},
                "docs_per_file": docs_per_file, "long_words": list(long_words),
                "short_words": list(short_words), "format": 1}
    if _holds(out, manifest):
        return out
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and does not hold this corpus (manifest.json differs); "
                              "choose another directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        for kind, n in manifest["docs"].items():
            (tmp / kind).mkdir()
            texts = documents(kind, n, seed, long_words, short_words)
            for part, start in enumerate(range(0, n, docs_per_file)):
                with open(tmp / kind / f"part-{part:05d}.jsonl", "w", encoding="utf-8") as f:
                    for text in texts[start:start + docs_per_file]:
                        f.write(json.dumps({"text": text}) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        try:
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
        except OSError:
            if not _holds(out, manifest):  # another process may have written the same corpus first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _holds(out: Path, manifest: dict) -> bool:
    try:
        return json.loads((out / "manifest.json").read_text()) == manifest
    except (OSError, ValueError):
        return False


PREFIX = "synthetic:"


def resolve(path: str) -> Path:
    """The directory of a `synthetic:KIND` source path, writing the default corpus (seed 0) into
    the qwen3_jax cache (`$QWEN3_JAX_CACHE_DIR`, else ~/.cache/qwen3_jax) on first use."""
    from qwen3_jax.text.tokenizer_files import cache_dir

    kind = path[len(PREFIX):]
    if kind not in KINDS:
        raise ValueError(f"data source {path}: unknown synthetic kind {kind!r} (expected one of {', '.join(KINDS)})")
    return write_corpus(cache_dir() / "synthetic-corpus-v1") / kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the document counts")
    args = parser.parse_args(argv)
    try:
        out = write_corpus(args.out_dir, seed=args.seed, scale=args.scale)
    except (FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
