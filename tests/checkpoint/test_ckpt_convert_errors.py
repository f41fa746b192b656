"""Bad inputs and interruptions: a one-line-per-problem message, exit status 2, output absent or untouched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ckpt_helpers import make_hf_dir
from qwen3_jax.checkpoint.safetensors_write import write_random_hf_checkpoint
from qwen3_jax.cli.main import main
from qwen3_jax.config import Qwen3Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "hf"
    make_hf_dir(path, kind="dense")
    return path


def _copy(good, tmp_path, edit=None):
    """A copy of the good checkpoint whose tensors went through `edit(dict) -> dict`."""
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    if edit:
        save_file(edit(load_file(bad / "model.safetensors")), bad / "model.safetensors", metadata={"format": "pt"})
    return bad


def _convert_fails(capsys, src, dst, *extra):
    rc = main(["convert", str(src), str(dst), "--quiet", *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.startswith("qwen3-jax convert: error:")
    assert not [n for n in os.listdir(os.path.dirname(dst)) if n.startswith(f".{os.path.basename(dst)}.")]
    return err


def test_missing_unexpected_wrong_shape_and_dtype_are_all_named(good, tmp_path, capsys):
    def edit(t):
        del t["model.layers.1.self_attn.q_proj.weight"]
        t["model.layers.1.mlp.extra.weight"] = np.zeros(3, np.float32)
        t["model.norm.weight"] = np.zeros(65, np.float32)
        return t

    err = _convert_fails(capsys, _copy(good, tmp_path, edit), tmp_path / "out")
    assert "missing: model.layers.1.self_attn.q_proj.weight" in err
    assert "unexpected: model.layers.1.mlp.extra.weight" in err
    assert "wrong shape: model.norm.weight is [65]" in err
    assert not (tmp_path / "out").exists()

    def int_weights(t):
        t["model.layers.0.mlp.up_proj.weight"] = t["model.layers.0.mlp.up_proj.weight"].astype(np.int32)
        return t

    err = _convert_fails(capsys, _copy(good, tmp_path / "b", int_weights), tmp_path / "out")
    assert "wrong dtype: model.layers.0.mlp.up_proj.weight is int32" in err
    assert not (tmp_path / "out").exists()


def test_truncated_and_corrupt_files(good, tmp_path, capsys):
    bad = _copy(good, tmp_path)
    f = bad / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    err = _convert_fails(capsys, bad, tmp_path / "out")
    assert "truncated" in err and "model.safetensors" in err
    f.write_bytes(data[:8] + b"\xff" * 64 + data[72:])
    assert "corrupt safetensors header" in _convert_fails(capsys, bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_config_that_disagrees_with_the_tensors(good, tmp_path, capsys):
    bad = _copy(good, tmp_path)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 4, "intermediate_size": 96}))
    err = _convert_fails(capsys, bad, tmp_path / "out")
    assert "missing: model.layers.3.input_layernorm.weight" in err
    assert "wrong shape: model.layers.0.mlp.up_proj.weight is [128, 64], config expects [96, 64]" in err
    (bad / "config.json").write_text('{"model_type": "qwen3", ')
    assert "not valid JSON" in _convert_fails(capsys, bad, tmp_path / "out")
    assert "is not a directory" in _convert_fails(capsys, tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    assert "no config.json" in _convert_fails(capsys, tmp_path / "empty", tmp_path / "out")


def test_existing_output_needs_force_and_is_replaced_only_when_complete(good, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "--force" in _convert_fails(capsys, good, out)
    assert os.listdir(out) == ["keep.txt"]
    # --force with a bad source: validation fails first, the old output is untouched.
    bad = _copy(good, tmp_path, lambda t: {k: v for k, v in t.items() if "norm" not in k})
    _convert_fails(capsys, bad, out, "--force")
    assert os.listdir(out) == ["keep.txt"]
    assert main(["convert", str(good), str(out), "--quiet", "--force"]) == 0
    assert {"generation_config.json", "merges.txt", "checksums.json"} <= set(os.listdir(out))
    assert not (out / "keep.txt").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_a_mesh_larger_than_the_devices_is_refused(good, tmp_path, capsys):
    err = _convert_fails(capsys, good, tmp_path / "out", "--mesh", "tensor=16")
    assert "--mesh" in err and "16 devices" in err and not (tmp_path / "out").exists()


def test_export_refuses_a_directory_that_is_not_ours(good, tmp_path, capsys):
    rc = main(["export", str(good), str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a qwen3-jax Orbax checkpoint" in err and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """~100 MB of random weights in 8 files: long enough to be killed mid-conversion."""
    cfg = Qwen3Config(vocab_size=4096, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=4, head_dim=64)
    path = tmp_path_factory.mktemp("medium") / "hf"
    write_random_hf_checkpoint(path, cfg, max_shard_size="15MB")
    return path


def _kill_mid_run(src, out):
    """Starts the converter, SIGKILLs it once it has begun writing params; returns its exit status."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.Popen([sys.executable, "-m", "qwen3_jax.cli.main", "convert", str(src), str(out), "--quiet",
                          "--force"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parent, deadline = os.path.dirname(out), time.time() + 60
    tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp-{p.pid}")
    while time.time() < deadline and p.poll() is None:
        if os.path.exists(os.path.join(tmp, "params.partial_save")):
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    rc = p.wait()
    assert os.path.isdir(tmp), "the converter finished (or never started) before it could be killed: " + \
        p.stderr.read().decode()[-2000:]
    return rc


def test_sigkill_leaves_no_output_and_a_rerun_succeeds(medium, tmp_path):
    out = tmp_path / "out"
    assert _kill_mid_run(medium, out) == -signal.SIGKILL
    assert not out.exists()
    assert main(["convert", str(medium), str(out), "--quiet"]) == 0
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")], "stale temp dir not cleaned up"


def test_sigkill_during_force_leaves_the_old_output_untouched(medium, good, tmp_path):
    out = tmp_path / "out"
    assert main(["convert", str(good), str(out), "--quiet"]) == 0
    before = {f: (out / f).read_bytes() for f in os.listdir(out) if (out / f).is_file()}
    assert _kill_mid_run(medium, out) == -signal.SIGKILL
    assert {f: (out / f).read_bytes() for f in os.listdir(out) if (out / f).is_file()} == before
    assert json.loads((out / "qwen3_config.json").read_text())["hidden_size"] == 64


def test_a_run_killed_between_the_two_renames_gets_its_old_output_back(good, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = tmp_path / f".out.old-{dead.pid}"  # what --force leaves if killed after moving `out` aside
    old.mkdir()
    (old / "keep.txt").write_text("mine")
    (tmp_path / f".out.tmp-{dead.pid}").mkdir()
    assert "--force" in _convert_fails(capsys, good, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == ["keep.txt"] and os.listdir(tmp_path) == ["out"]
