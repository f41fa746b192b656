"""The mesh search: when none of the top-ranked candidates fits once compiled (the analytic guess is
rough), the next-ranked ones are compiled one by one, a bounded number of them, before the slice is
given up. The compile worker is replaced by a stub that answers from a table, so no TPU compile runs."""

import pytest

from qwen3_jax.plan import search
from qwen3_jax.plan.topology import parse_slice
from qwen3_jax.presets import get_preset


def _stub(fits_for, calls):
    def run_worker(requests, timeout=None, progress=None):
        calls.append([r["mesh"] for r in requests])
        out = []
        for r in requests:
            ok = fits_for(r["mesh"])
            out.append({"model": r["model"], "mesh": r["mesh"], "fits": ok, "programs": [],
                        "bytes_per_chip": {"total": (50 if ok else 120) * 2**30}, "estimated_step_seconds": 1.0})
        return out
    return run_worker


@pytest.fixture
def ranked():
    cfg, sl = get_preset("Qwen3-4B"), parse_slice("v5p-32")
    live = [c for c in (search.screen(cfg, sl, m, "train", 4096, 256, None, None)
                        for m in search.candidate_meshes(cfg, sl.chips)) if c.reason is None]
    live.sort(key=lambda c: (c.guess["bytes"] > search.GUESS_MARGIN * sl.chip.hbm_bytes, c.guess["seconds"]))
    return cfg, sl, [c.mesh for c in live]


def test_next_ranked_candidate_is_compiled_when_the_top_one_does_not_fit(monkeypatch, ranked):
    cfg, sl, order = ranked
    calls = []
    monkeypatch.setattr(search, "run_worker", _stub(lambda m: m == order[1], calls))
    r = search.plan(cfg, "Qwen3-4B", sl, "train", 4096, 256, top=1)
    assert calls == [[order[0]], [order[1]]]  # the top one, then the next one alone
    assert r["fits"] and r["mesh"] == order[1]
    reasons = {str(c["mesh"]): c["reason"] for c in r["candidates"]}
    assert reasons[str(order[0])].startswith("does not fit: 120.0 GiB per chip")
    assert reasons[str(order[2])].startswith("not compiled: ranked below the 2 compiled")


def test_fallback_is_bounded(monkeypatch, ranked):
    cfg, sl, order = ranked
    calls = []
    monkeypatch.setattr(search, "run_worker", _stub(lambda m: False, calls))
    r = search.plan(cfg, "Qwen3-4B", sl, "train", 4096, 256, top=2)
    assert [len(c) for c in calls] == [2] + [1] * search.FALLBACK_COMPILES
    assert not r["fits"] and r["suggestions"]


def test_a_fitting_top_candidate_stops_the_search(monkeypatch, ranked):
    cfg, sl, order = ranked
    calls = []
    monkeypatch.setattr(search, "run_worker", _stub(lambda m: True, calls))
    r = search.plan(cfg, "Qwen3-4B", sl, "train", 4096, 256, top=1)
    assert calls == [[order[0]]] and r["mesh"] == order[0]


def test_a_program_out_of_memory_is_named_not_the_others_bytes(monkeypatch, ranked):
    cfg, sl, order = ranked
    err = "prefill: RESOURCE_EXHAUSTED: Ran out of memory on HBM"

    def run_worker(requests, timeout=None, progress=None):
        return [{"model": r["model"], "mesh": r["mesh"], "fits": False, "error": err,
                 "bytes_per_chip": {"total": 10 * 2**30}, "estimated_step_seconds": 1.0,
                 "programs": [{"name": "prefill", "compiled": False, "needed_bytes": None},
                              {"name": "decode", "compiled": True}]} for r in requests]

    monkeypatch.setattr(search, "run_worker", run_worker)
    r = search.plan(cfg, "Qwen3-4B", sl, "train", 4096, 256, top=1)
    assert {c["reason"] for c in r["candidates"] if c["bytes_per_chip"]} == {f"does not fit: {err}"}
