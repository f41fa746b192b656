"""Order: seeded determinism, per-process shards, mixture weights, exact resume from a state."""

import collections
import json

import numpy as np
import pytest
from data_helpers import ByteTokenizer, batches, doc_text, drain, segments, seg_text, write_jsonl

from qwen3_jax.train.data import DataConfig, DataError, build_data

SEQ = 48


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("order")
    rng = np.random.default_rng(1)
    a = [doc_text(i, int(n)) for i, n in enumerate(rng.integers(6, 40, size=90))]
    b = [doc_text(1000 + i, int(n)) for i, n in enumerate(rng.integers(6, 40, size=50))]
    write_jsonl(root / "a" / "x.jsonl", a)
    write_jsonl(root / "b" / "y.jsonl", b)
    write_jsonl(root / "c" / "z.jsonl", [doc_text(2000 + i, 40 + i % 7) for i in range(40)])
    return root, a, b


def _cfg(root, **kw):
    base = dict(sources=[{"path": str(root / "a"), "kind": "jsonl", "weight": 3.0},
                         {"path": str(root / "b"), "kind": "jsonl", "weight": 1.0}],
                seq_len=SEQ, batch_size=4, seed=7)
    return DataConfig(**{**base, **kw})


def _same(x, y):
    return all(np.array_equal(x[k], y[k]) for k in x)


def test_same_seed_same_batches_other_seed_other(two_sources):
    root, *_ = two_sources
    one = batches(build_data(_cfg(root), ByteTokenizer()), 6)
    two = batches(build_data(_cfg(root, read_threads=0), ByteTokenizer()), 6)
    other = batches(build_data(_cfg(root, seed=8), ByteTokenizer()), 6)
    assert all(_same(x, y) for x, y in zip(one, two))
    assert not all(_same(x, y) for x, y in zip(one, other))


def test_process_shards_are_disjoint_and_cover(two_sources):
    root, a, b = two_sources
    seen = []
    for p in range(3):
        cfg = _cfg(root, batch_size=6, num_epochs=1,
                   sources=[{"path": str(root / "a"), "kind": "jsonl"}])
        it = build_data(cfg, ByteTokenizer(), process_index=p, process_count=3)
        out = drain(it)
        assert all(bt["tokens"].shape == (2, SEQ) for bt in out)   # local batch = 6 / 3 processes
        got = [seg_text(s) for bt in out for s in segments(bt)]
        seen.append(got)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not set(seen[i]) & set(seen[j])
    assert collections.Counter(sum(seen, [])) == collections.Counter(a)


def test_local_batch_and_process_count_independence(two_sources):
    """1 process x 2 shards gives the rows of 2 processes x 1 shard, concatenated."""
    root, *_ = two_sources
    whole = batches(build_data(_cfg(root, num_shards=2), ByteTokenizer()), 4)
    p0 = batches(build_data(_cfg(root), ByteTokenizer(), process_index=0, process_count=2), 4)
    p1 = batches(build_data(_cfg(root), ByteTokenizer(), process_index=1, process_count=2), 4)
    for w, x, y in zip(whole, p0, p1):
        assert x["tokens"].shape == (2, SEQ) and w["tokens"].shape == (4, SEQ)
        assert x["tokens"].shape[0] == build_data(_cfg(root), ByteTokenizer(), process_count=2).local_batch_size
        assert all(np.array_equal(w[k], np.concatenate([x[k], y[k]])) for k in w)


@pytest.mark.parametrize("mix_by", ["tokens", "documents"])
def test_mixture_follows_weights(two_sources, mix_by):
    """Source b's documents are on average longer than a's, so token and document shares differ."""
    root, *_ = two_sources
    for wa, wb in [(3.0, 1.0), (1.0, 4.0)]:
        cfg = _cfg(root, mix_by=mix_by, sources=[
            {"path": str(root / "a"), "kind": "jsonl", "weight": wa},
            {"path": str(root / "c"), "kind": "jsonl", "weight": wb}])
        segs = [s for bt in batches(build_data(cfg, ByteTokenizer()), 60) for s in segments(bt)]
        from_a = np.array([int(seg_text(s)[1:5]) < 1000 for s in segs])
        lengths = np.array([len(s) for s in segs])
        share = {"documents": from_a.mean(), "tokens": lengths[from_a].sum() / lengths.sum()}
        assert len(segs) > 200
        assert abs(share[mix_by] - wa / (wa + wb)) < 0.03, (wa, wb, share)
        other = "tokens" if mix_by == "documents" else "documents"
        assert abs(share[other] - wa / (wa + wb)) > 0.05, (wa, wb, share)


@pytest.mark.parametrize("kw", [dict(), dict(num_shards=2), dict(packer="best_fit", read_threads=3)])
def test_state_restore_gives_the_following_batches(two_sources, kw):
    root, *_ = two_sources
    it = build_data(_cfg(root, **kw), ByteTokenizer())
    batches(it, 5)
    state = it.get_state()
    assert isinstance(state, bytes) and json.loads(state)["format"] == 1
    expect = batches(it, 7)
    fresh = build_data(_cfg(root, **kw), ByteTokenizer())
    fresh.set_state(state)
    assert all(_same(x, y) for x, y in zip(expect, batches(fresh, 7)))
    again = build_data(_cfg(root, **kw), ByteTokenizer())   # a decoded dict is accepted too
    again.set_state(json.loads(state))
    assert _same(expect[0], next(again))


def test_state_through_grain_orbax_handler(two_sources, tmp_path):
    import grain
    from etils import epath

    root, *_ = two_sources
    it = build_data(_cfg(root), ByteTokenizer())
    batches(it, 3)
    handler = grain.checkpoint.CheckpointHandler()
    handler.save(epath.Path(tmp_path), args=grain.checkpoint.CheckpointSave(it))
    expect = next(it)
    fresh = handler.restore(epath.Path(tmp_path),
                            args=grain.checkpoint.CheckpointRestore(build_data(_cfg(root), ByteTokenizer())))
    assert _same(expect, next(fresh))


def test_state_from_another_layout_is_refused(two_sources):
    root, *_ = two_sources
    state = build_data(_cfg(root), ByteTokenizer()).get_state()
    other = build_data(_cfg(root, batch_size=8), ByteTokenizer())
    with pytest.raises(DataError, match="layout"):
        other.set_state(state)
    with pytest.raises(DataError, match="not valid JSON"):
        other.set_state(b"{oops")


@pytest.mark.slow  # ~30 s: worker processes start by importing qwen3_jax (jax, flax)
def test_worker_processes_resume_exactly(two_sources):
    """grain's mp_prefetch: another (still seeded) order than in-process reading, exact resume."""
    root, *_ = two_sources
    cfg = _cfg(root, worker_processes=2)
    it = build_data(cfg, ByteTokenizer())
    first = batches(it, 3)
    state = it.get_state()
    expect = batches(it, 3)
    fresh = build_data(cfg, ByteTokenizer())
    fresh.set_state(state)
    assert all(_same(x, y) for x, y in zip(expect, batches(fresh, 3)))
    assert all(_same(x, y) for x, y in zip(first, batches(build_data(cfg, ByteTokenizer()), 3)))
    with pytest.raises(DataError, match="layout"):
        build_data(_cfg(root), ByteTokenizer()).set_state(state)
    it.close()
    fresh.close()
    fresh.close()


def test_config_round_trips_through_a_dict(two_sources):
    root, *_ = two_sources
    cfg = _cfg(root, num_shards=2, mix_by="documents")
    assert DataConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_file_sharding_splits_files_between_processes(tmp_path):
    texts = {f: [doc_text(100 * f + i, 10 + i) for i in range(5 + f)] for f in range(5)}
    for f, t in texts.items():
        write_jsonl(tmp_path / f"part{f}.jsonl", t)
    src = [{"path": str(tmp_path), "kind": "jsonl"}]
    seen = []
    for p in range(2):
        cfg = DataConfig(sources=src, seq_len=SEQ, batch_size=2, num_epochs=1, seed=0)
        seen.append({seg_text(s) for b in drain(build_data(cfg, ByteTokenizer(), process_index=p,
                                                           process_count=2)) for s in segments(b)})
    # shard 0 reads part0, part2, part4; shard 1 part1, part3 (the last batch of a shard is padded)
    assert seen[0] == set(texts[0] + texts[2] + texts[4])
    assert seen[1] == set(texts[1] + texts[3])
    by_records = DataConfig(sources=src, seq_len=SEQ, batch_size=2, num_epochs=1, shard_by="records")
    rec = {seg_text(s) for b in drain(build_data(by_records, ByteTokenizer(), process_index=1,
                                                 process_count=2)) for s in segments(b)}
    assert rec != seen[1] and rec < set(sum(texts.values(), []))
    with pytest.raises(DataError, match="5 files cannot fill 8"):
        build_data(DataConfig(sources=src, seq_len=SEQ, batch_size=8, shard_by="files"), ByteTokenizer(),
                   process_index=0, process_count=8)


def test_state_refused_when_the_data_changed(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [doc_text(i, 20) for i in range(10)])
    cfg = DataConfig(sources=[{"path": str(tmp_path), "kind": "jsonl"}], seq_len=SEQ, batch_size=2)
    state = build_data(cfg, ByteTokenizer()).get_state()
    write_jsonl(tmp_path / "a.jsonl", [doc_text(i, 20) for i in range(11)])
    with pytest.raises(DataError, match="layout"):
        build_data(cfg, ByteTokenizer()).set_state(state)


def test_state_in_an_orbax_checkpoint_manager(two_sources, tmp_path):
    """The way the trainer saves it: a `data` item of an orbax Composite, next to the model state."""
    import grain
    import orbax.checkpoint as ocp

    root, *_ = two_sources
    it = build_data(_cfg(root), ByteTokenizer())
    batches(it, 2)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it),
                                             meta=ocp.args.JsonSave({"step": 2})))
        mngr.wait_until_finished()
    expect = batches(it, 2)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        restored = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(build_data(_cfg(root), ByteTokenizer())),
            meta=ocp.args.JsonRestore()))
    assert restored.meta == {"step": 2}
    assert all(_same(x, y) for x, y in zip(expect, batches(restored.data, 2)))
