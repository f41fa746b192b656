"""The generated tiny corpus: deterministic, correct arithmetic, the length split, usable by the pipeline."""

import filecmp
import json
import re

import numpy as np
import pytest
from data_helpers import ByteTokenizer

from qwen3_jax.train.data import DataConfig, build_data, synthetic


def test_deterministic_and_idempotent(tmp_path):
    a = synthetic.write_corpus(tmp_path / "a", scale=0.02)
    b = synthetic.write_corpus(tmp_path / "b", scale=0.02)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 5
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors
    mtime = (a / "general" / "part-00000.jsonl").stat().st_mtime_ns
    synthetic.write_corpus(tmp_path / "a", scale=0.02)              # same corpus: left alone
    assert (a / "general" / "part-00000.jsonl").stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError):
        synthetic.write_corpus(tmp_path / "a", scale=0.02, seed=1)
    assert synthetic.main([str(tmp_path / "a"), "--seed", "1", "--scale", "0.02"]) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp dir left


def test_worked_answers_are_right():
    docs = synthetic.documents("reasoning", 300, seed=5)
    checked = 0
    for d in docs:
        for expr, value in re.findall(r"(?<![-+*=] )(?<!\d)(\d+(?: [-+*] \d+)+) = (\d+)", d):
            assert eval(expr) == int(value), (expr, value, d)   # digits and + - * only
            checked += 1
        for s, digit in re.findall(r"= (\d+), write (\d)", d):
            assert int(s) % 10 == int(digit), d
    assert checked > 600


def test_long_and_short_documents_and_their_questions():
    longs = synthetic.documents("long", 20, long_words=(300, 400))
    shorts = synthetic.documents("short", 20, short_words=(60, 120))
    assert min(len(d.split()) for d in longs) > max(len(d.split()) for d in shorts)
    for d in longs:
        who, thing = re.search(r"What does (\w+) have\? Answer: \w+ has an? (\w+ \w+)\.", d).groups()
        assert re.match(rf".*{who} has an? {thing} and lives", d)   # the answer was stated up front


def test_pipeline_reads_the_corpus(tmp_path):
    root = synthetic.write_corpus(tmp_path / "c", scale=0.05)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["docs"]["general"] == 200
    cfg = DataConfig(sources=[{"path": str(root / "general"), "weight": 1},
                              {"path": str(root / "reasoning"), "weight": 1}],
                     seq_len=256, batch_size=4)
    it = build_data(cfg, ByteTokenizer())
    out = [next(it) for _ in range(10)]
    text = b"".join(bytes(int(t) for t in b["tokens"].ravel() if t < 256) for b in out).decode()
    assert "Question: What is" in text and "lives near" not in text and " went to " in text
    assert np.mean([(b["segment_ids"] > 0).mean() for b in out]) > 0.85   # little padding


def test_synthetic_source_path_generates_into_the_cache(tmp_path, monkeypatch):
    from qwen3_jax.train.data import DataError
    from qwen3_jax.text.tokenizer import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(synthetic, "DEFAULT_DOCS", {k: 30 for k in synthetic.KINDS})
    cfg = DataConfig(sources=[{"path": "synthetic:reasoning"}], seq_len=128, batch_size=2)
    b = next(build_data(cfg, ByteTokenizer()))
    assert b"Question: " in bytes(int(t) for t in b["tokens"][0] if t < 256)
    assert (tmp_path / "cache" / "synthetic-corpus-v1" / "reasoning" / "part-00000.jsonl").is_file()
    with pytest.raises(DataError, match="'poems'"):
        build_data(DataConfig(sources=[{"path": "synthetic:poems"}], seq_len=8, batch_size=1), ByteTokenizer())
