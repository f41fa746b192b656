"""`qwen3-jax plan`: an impossible request is refused (exit 1, suggestions), bad input exits 2."""

import json
import os
import subprocess
import sys

import pytest

# libtpu (in the test extra) ships for Linux only; elsewhere a missing libtpu fails the compile
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libtpu ships for Linux only")


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "qwen3_jax.cli.main", "plan", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def test_unfittable_request_is_refused_with_suggestions():
    r = _cli("--model", "qwen3-235b-a22b", "--topology", "v5e-4", "--task", "train", "--seq", "4096",
             "--batch", "256")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "no mesh fits this request on this slice." in r.stdout
    assert "suggestion: a larger slice: v5p-" in r.stdout  # 256 v5e chips hold too little HBM
    assert "alone need" in r.stdout  # the rejected candidates say why


def test_unfittable_request_json():
    r = _cli("--model", "qwen3-235b-a22b", "--topology", "v5e-4", "--task", "train", "--seq", "4096",
             "--batch", "256", "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["fits"] is False and out["chips"] == 4 and out["hbm_bytes_per_chip"] == 16 * 10**9
    assert out["suggestions"] and all(c["reason"] for c in out["candidates"])


@pytest.mark.parametrize("args, needle", [
    (("--model", "tiny-moe", "--topology", "v9-8", "--seq", "128", "--batch", "8"), "unknown TPU generation"),
    (("--model", "nope", "--topology", "v5p-8", "--seq", "128", "--batch", "8"), "unknown preset"),
    (("--model", "tiny-moe", "--topology", "v5p-8", "--seq", "128", "--batch", "8", "--mesh", "data=8"),
     "covers 8 chips"),
    (("--model", "tiny-moe", "--topology", "v5p-8", "--seq", "99999", "--batch", "8"), "above the model's"),
    (("--model", "tiny-moe", "--topology", "v5p-8", "--seq", "128", "--batch", "8", "--capacity-factor", "0"),
     "--capacity-factor must be > 0"),
])
def test_bad_input_exits_2(args, needle):
    r = _cli(*args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_plan_with_a_given_mesh_prints_the_report():
    r = _cli("--model", "tiny-moe", "--topology", "v5p-8", "--mesh", "expert=4", "--seq", "128", "--batch", "8",
             "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    for key in ("fits", "mesh", "chips", "hbm_bytes_per_chip", "bytes_per_chip", "model_flops_per_step",
                "collectives"):
        assert key in out
    assert out["mesh"] == {"expert": 4} and out["fits"]
    assert out["bytes_per_chip"]["total"] > 0 and "ragged-all-to-all" in out["collectives"]
