"""Each source kind is read, and bad input fails early with a one-line error naming the culprit."""

import collections

import numpy as np

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import EOS, ByteTokenizer, doc_text, drain, segments, seg_text, write_jsonl

from qwen3_jax.train.data import DataConfig, DataError, build_data, open_source, write_tokenized
from qwen3_jax.train.data.config import SourceConfig

TEXTS = [doc_text(i, 8 + 3 * i) for i in range(23)] + ["héllo wörld ✓ — naïve"]


def _read_all(src: dict, tokenizer=None, **kw) -> list:
    cfg = DataConfig(sources=[src], seq_len=128, batch_size=2, seed=0, num_epochs=1, **kw)
    return [s for b in drain(build_data(cfg, tokenizer or ByteTokenizer())) for s in segments(b)]


def test_jsonl(tmp_path):
    write_jsonl(tmp_path / "one.jsonl", TEXTS[:10], field="body")
    (tmp_path / "two.jsonl").write_text("\n".join(f'{{"body": "{t}"}}' for t in TEXTS[10:20]) + "\n\n")
    got = _read_all({"path": str(tmp_path), "kind": "jsonl", "text_field": "body"})
    assert collections.Counter(map(seg_text, got)) == collections.Counter(TEXTS[:20])


def test_parquet(tmp_path):
    table = pa.table({"id": list(range(len(TEXTS))), "content": TEXTS})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=5)   # several row groups
    src = open_source(SourceConfig(path=str(tmp_path / "a.parquet"), kind="parquet", text_field="content"))
    assert len(src) == len(TEXTS) and src[17] == TEXTS[17] and src[3] == TEXTS[3]
    got = _read_all({"path": str(tmp_path), "kind": "parquet", "text_field": "content"})
    assert collections.Counter(map(seg_text, got)) == collections.Counter(TEXTS)


def test_text_directory(tmp_path):
    for i, t in enumerate(TEXTS):
        sub = tmp_path / ("deep" if i % 2 else "") / f"doc{i}.txt"
        sub.parent.mkdir(exist_ok=True)
        sub.write_text(t, encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("never read")
    (tmp_path / "notes.md").write_text("not a .txt")
    got = _read_all({"path": str(tmp_path), "kind": "text"})
    assert collections.Counter(map(seg_text, got)) == collections.Counter(TEXTS)


def test_array_record_pretokenized(tmp_path):
    docs = [list(range(i + 1, 2 * i + 5)) for i in range(30)]
    assert write_tokenized(tmp_path / "t.array_record", docs) == 30
    got = _read_all({"path": str(tmp_path), "kind": "array_record"})
    assert all(s[-1] == EOS for s in got)
    assert sorted(tuple(s[:-1]) for s in got) == sorted(tuple(d) for d in docs)
    no_eos = _read_all({"path": str(tmp_path), "kind": "array_record"}, append_eos=False)
    assert sorted(tuple(s) for s in no_eos) == sorted(tuple(d) for d in docs)


def test_length_bounds_select_documents(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", TEXTS)
    got = _read_all({"path": str(tmp_path), "kind": "jsonl", "min_tokens": 30, "max_tokens": 50})
    expect = [t for t in TEXTS if 30 <= len(t.encode()) + 1 <= 50]
    assert expect and collections.Counter(map(seg_text, got)) == collections.Counter(expect)


@pytest.fixture(scope="module")
def qwen_tok(tmp_path_factory):
    """The Qwen3 tokenizer, built once into a temporary cache (exported for CLI runs)."""
    from qwen3_jax import Tokenizer
    from qwen3_jax.text.tokenizer import CACHE_ENV

    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("tok_cache")))
    yield Tokenizer.qwen3()
    mp.undo()


def test_qwen3_tokenizer_inside_the_pipeline(tmp_path, qwen_tok):
    tok = qwen_tok
    texts = ["Hello world", "The cat sat on the mat.", "Question: What is 2 + 3? Answer: 5."]
    write_jsonl(tmp_path / "d" / "a.jsonl", texts)
    got = _read_all({"path": str(tmp_path / "d"), "kind": "jsonl"}, tokenizer=tok)
    expect = sorted(tuple(tok.encode(t) + [tok.endoftext_id]) for t in texts)
    assert sorted(tuple(s.tolist()) for s in got) == expect
    assert expect[0][-1] == 151643


# ------------------------------------------------------------------------------ bad input
def _build(src, **kw):
    return build_data(DataConfig(**{"sources": [src], "seq_len": 32, "batch_size": 2, **kw}), ByteTokenizer())


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


def test_path_with_no_files(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "zero.jsonl").write_text("")
    with pytest.raises(DataError) as e:
        _build({"path": str(tmp_path / "empty"), "kind": "jsonl"})
    assert str(tmp_path / "empty") in _one_line(e) and "no non-empty" in str(e.value)
    with pytest.raises(DataError, match="does not exist"):
        _build({"path": str(tmp_path / "nope"), "kind": "jsonl"})
    with pytest.raises(DataError, match=r"\*\.parquet"):
        write_jsonl(tmp_path / "j" / "a.jsonl", TEXTS)
        _build({"path": str(tmp_path / "j"), "kind": "parquet"})


def test_missing_text_field(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", TEXTS, field="content")
    with pytest.raises(DataError) as e:
        _build({"path": str(tmp_path), "kind": "jsonl"})
    assert "a.jsonl" in _one_line(e) and "'text'" in str(e.value)
    pq.write_table(pa.table({"content": TEXTS}), tmp_path / "a.parquet")
    with pytest.raises(DataError) as e:
        _build({"path": str(tmp_path / "a.parquet"), "kind": "parquet", "text_field": "body"})
    assert "a.parquet" in _one_line(e) and "'body'" in str(e.value)


def test_missing_field_in_a_later_record(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    with pytest.raises(DataError) as e:
        drain(_build({"path": str(tmp_path), "kind": "jsonl"}, num_epochs=1))
    assert "a.jsonl: record 2" in _one_line(e)


def test_unknown_kind_and_key(tmp_path):
    with pytest.raises(DataError) as e:
        _build({"path": str(tmp_path), "kind": "csv"})
    assert "'csv'" in _one_line(e)
    with pytest.raises(DataError) as e:
        _build({"path": str(tmp_path), "kind": "jsonl", "weigth": 2})
    assert "'weigth'" in _one_line(e)
    with pytest.raises(DataError) as e:
        DataConfig.from_dict({"sources": [{"path": "x"}], "seqlen": 5}, seq_len=8, batch_size=2)
    assert "'seqlen'" in _one_line(e)


def test_bad_layout(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", TEXTS)
    src = {"path": str(tmp_path), "kind": "jsonl"}
    with pytest.raises(DataError, match="batch_size=3"):
        build_data(DataConfig(sources=[src], seq_len=32, batch_size=3), ByteTokenizer(), process_count=2)
    with pytest.raises(DataError, match="num_shards=3"):
        build_data(DataConfig(sources=[src], seq_len=32, batch_size=6, num_shards=3), ByteTokenizer(),
                   process_count=2)
    with pytest.raises(DataError, match="shard 24 of 25 gets no documents"):
        _build(src, num_shards=len(TEXTS) + 1, batch_size=len(TEXTS) + 1)
    (tmp_path / "b.jsonl").write_text("\n\n\n")   # a second file, without records
    with pytest.raises(DataError, match="shard 1 of 2 gets no documents"):
        build_data(DataConfig(sources=[src], seq_len=32, batch_size=2), ByteTokenizer(), process_index=1,
                   process_count=2)


def test_bounds_no_document_meets(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", TEXTS)
    with pytest.raises(DataError) as e:
        next(_build({"path": str(tmp_path), "kind": "jsonl", "min_tokens": 10_000, "name": "longdocs"}))
    assert "longdocs" in _one_line(e)


# ------------------------------------------------------------------------------ pretokenize
def test_pretokenized_source_gives_the_batches_of_the_text_source(tmp_path):
    from qwen3_jax.train.data.pretokenize import pretokenize

    write_jsonl(tmp_path / "t" / "a.jsonl", TEXTS)
    manifest = pretokenize(SourceConfig(path=str(tmp_path / "t")), tmp_path / "tok", ByteTokenizer(),
                           docs_per_file=7, batch=3)
    assert manifest["documents"] == len(TEXTS) and len(manifest["files"]) == 4
    assert manifest["tokens"] == sum(len(t.encode()) for t in TEXTS)

    def first(src):
        cfg = DataConfig(sources=[src], seq_len=64, batch_size=2, seed=4, num_epochs=3)
        return drain(build_data(cfg, ByteTokenizer()))

    text = first({"path": str(tmp_path / "t")})
    ids = first({"path": str(tmp_path / "tok"), "kind": "array_record"})
    assert len(text) == len(ids) > 3
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(text, ids) for k in a)


def test_pretokenize_bad_input_leaves_nothing(tmp_path):
    from qwen3_jax.train.data.pretokenize import pretokenize

    write_jsonl(tmp_path / "t" / "a.jsonl", TEXTS)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        pretokenize(SourceConfig(path=str(tmp_path / "t")), tmp_path / "full", ByteTokenizer())

    class Boom(ByteTokenizer):
        def encode(self, text):
            if text == TEXTS[20]:
                raise KeyboardInterrupt
            return super().encode(text)

    with pytest.raises(KeyboardInterrupt):
        pretokenize(SourceConfig(path=str(tmp_path / "t")), tmp_path / "out", Boom(), docs_per_file=5, batch=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "t"]


def test_pretokenize_cli(tmp_path, qwen_tok, capsys):
    from qwen3_jax.cli.main import main

    assert main(["pretokenize", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1 and not (tmp_path / "out").exists()
    write_jsonl(tmp_path / "t" / "a.jsonl", TEXTS[:5], field="body")
    assert main(["pretokenize", str(tmp_path / "t"), str(tmp_path / "out")]) == 2
    assert "'text'" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["pretokenize", str(tmp_path / "t"), str(tmp_path / "out"), "--text-field", "body"]) == 0
    src = open_source(SourceConfig(path=str(tmp_path / "out"), kind="array_record"))
    assert [list(src[i]) for i in range(5)] == [qwen_tok.encode(t) for t in TEXTS[:5]]
