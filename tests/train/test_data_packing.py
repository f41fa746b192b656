"""Packing: rows hold whole documents (or row-sized chunks of long ones) with segment ids,
restarting positions and in-document targets; no token is lost or duplicated."""

import collections

import numpy as np
import pytest
from data_helpers import EOS, ByteTokenizer, doc_text, drain, segments, seg_text, write_jsonl

from qwen3_jax.train.data import DataConfig, build_data

SEQ = 64


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    lengths = rng.integers(6, 60, size=120)          # all shorter than a row (EOS makes +1)
    texts = [doc_text(i, int(n)) for i, n in enumerate(lengths)]
    root = tmp_path_factory.mktemp("pack")
    write_jsonl(root / "a.jsonl", texts[:70])
    write_jsonl(root / "sub" / "b.jsonl", texts[70:])
    return root, texts


def _cfg(root, **kw):
    base = dict(sources=[{"path": str(root), "kind": "jsonl"}], seq_len=SEQ, batch_size=4, seed=3)
    return DataConfig(**{**base, **kw})


def test_row_structure(corpus):
    root, _ = corpus
    it = build_data(_cfg(root), ByteTokenizer())
    for _ in range(5):
        b = next(it)
        assert set(b) == {"tokens", "segment_ids", "positions", "targets", "loss_mask"}
        for k, v in b.items():
            assert v.dtype == np.int32 and v.shape == (4, SEQ), k
        for tok, seg, pos, tgt, mask in zip(*(b[k] for k in ("tokens", "segment_ids", "positions",
                                                              "targets", "loss_mask"))):
            real = seg > 0
            n = int(real.sum())
            assert real[:n].all() and not real[n:].any()          # documents first, padding last
            ids = seg[:n]
            assert ids[0] == 1 and np.all(np.diff(ids) >= 0) and np.all(np.diff(ids) <= 1)
            for s in np.unique(ids):
                idx = np.flatnonzero(seg == s)
                np.testing.assert_array_equal(pos[idx], np.arange(len(idx)))
                assert tok[idx[-1]] == EOS and not (tok[idx[:-1]] == EOS).any()
                np.testing.assert_array_equal(tgt[idx[:-1]], tok[idx[1:]])
                assert mask[idx[:-1]].all() and mask[idx[-1]] == 0 and tgt[idx[-1]] == 0
            assert not mask[n:].any() and not tok[n:].any() and not pos[n:].any()


def test_one_epoch_loses_and_duplicates_nothing(corpus):
    root, texts = corpus
    got = [seg_text(s) for b in drain(build_data(_cfg(root, num_epochs=1), ByteTokenizer()))
           for s in segments(b)]
    assert collections.Counter(got) == collections.Counter(texts)


def test_two_epochs_each_doc_twice_in_new_order(corpus):
    root, texts = corpus
    got = [seg_text(s) for b in drain(build_data(_cfg(root, num_epochs=2), ByteTokenizer()))
           for s in segments(b)]
    assert collections.Counter(got) == collections.Counter(texts * 2)
    assert got[:len(texts)] != got[len(texts):]        # reshuffled every epoch


def test_long_documents_are_chunked_not_truncated(tmp_path):
    texts = [doc_text(i, n) for i, n in enumerate([10, 300, 64, 63, 129, 20])]
    write_jsonl(tmp_path / "a.jsonl", texts)
    cfg = DataConfig(sources=[{"path": str(tmp_path), "kind": "jsonl"}], seq_len=SEQ, batch_size=2,
                     seed=0, num_epochs=1)
    segs = [s for b in drain(build_data(cfg, ByteTokenizer())) for s in segments(b)]
    assert all(len(s) <= SEQ for s in segs)
    assert sum(len(s) for s in segs) == sum(len(t) + 1 for t in texts)
    # each document is its chunks laid end to end: a chunk is a prefix-aligned slice
    full = {t.split()[0]: list(t.encode()) + [EOS] for t in texts}
    pieces = collections.defaultdict(list)
    for s in segs:
        if s[0] == ord("d"):
            pieces[bytes(s[:5].tolist()).decode()].append(s)
    for name, ids in full.items():
        first = pieces[name]
        assert len(first) == 1 and list(first[0]) == ids[:SEQ]
    chunks = sorted(tuple(s) for s in segs)
    expect = sorted(tuple(ids[i:i + SEQ]) for ids in full.values() for i in range(0, len(ids), SEQ))
    assert chunks == expect


def test_last_batch_padded_to_full_shape(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [doc_text(i, 40) for i in range(5)])
    cfg = DataConfig(sources=[{"path": str(tmp_path), "kind": "jsonl"}], seq_len=SEQ, batch_size=4,
                     seed=0, num_epochs=1, packing_bins=1)
    out = drain(build_data(cfg, ByteTokenizer()))
    assert len(out) == 2 and out[-1]["tokens"].shape == (4, SEQ)
    assert (out[-1]["segment_ids"][1:] == 0).all() and (out[-1]["segment_ids"][0] > 0).any()
