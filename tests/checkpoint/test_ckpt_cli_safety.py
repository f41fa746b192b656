"""The installed `qwen3-jax convert/export` as a user runs them: relative paths, destinations that
overlap the source, Ctrl-C. Every failure exits 2 (130 for Ctrl-C) without a traceback, and leaves
the source and any existing destination exactly as they were, with no temporary directory behind."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from ckpt_helpers import make_hf_dir
from qwen3_jax.checkpoint.safetensors_write import write_random_hf_checkpoint
from qwen3_jax.config import Qwen3Config
from qwen3_jax.testing import interrupt_cli, run_cli


def tree_digest(path) -> dict:
    """Relative path -> sha256 of every file under `path` (directories by their listing)."""
    out = {}
    for root, dirs, files in os.walk(path):
        rel = os.path.relpath(root, path)
        out[rel + "/"] = sorted(dirs)
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                out[os.path.join(rel, f)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def leftovers(parent) -> list[str]:
    return [n for n in os.listdir(parent) if ".tmp-" in n or ".old-" in n]


def fails_cleanly(proc, command, one_line=True):
    """Exit 2, no traceback, the error on stderr (one line unless it lists several problems)."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"qwen3-jax {command}: error:"), proc.stderr
    assert proc.stderr.count("\n") == 1 or not one_line, proc.stderr
    return proc.stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny HF checkpoint `hf/` and its conversion `ck/`, in one directory."""
    root = tmp_path_factory.mktemp("cli")
    make_hf_dir(root / "hf")
    assert run_cli("convert", str(root / "hf"), str(root / "ck"), "--quiet").returncode == 0
    return root


def test_relative_paths_work_for_convert_export_and_load(work, tmp_path, monkeypatch):
    # `chat --model` and `generate --model` load through `qwen3_jax.load`, tested here in-process.
    monkeypatch.chdir(work)
    rel_out = os.path.relpath(tmp_path, work)
    p = run_cli("convert", "hf", os.path.join(rel_out, "ck2"), "--quiet")
    assert p.returncode == 0, p.stderr
    p = run_cli("export", "ck", os.path.join(rel_out, "hf2"), "--quiet")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path / "hf2"))[:2] == ["config.json", "generation_config.json"]
    import qwen3_jax

    rel = qwen3_jax.load(os.path.join(rel_out, "ck2"))
    ab = qwen3_jax.load(str(work / "ck"))
    ids = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(np.asarray(rel.logits(ids)), np.asarray(ab.logits(ids)))


@pytest.mark.parametrize("command", ["convert", "export"])
@pytest.mark.parametrize("where", ["same", "inside", "parent", "symlink"])
def test_a_destination_overlapping_the_source_is_refused(work, tmp_path, command, where):
    import shutil

    src = tmp_path / "par" / "src"
    shutil.copytree(work / ("hf" if command == "convert" else "ck"), src)
    if where == "symlink":
        os.symlink(src, tmp_path / "link")
    dst = {"same": src, "inside": src / "out", "parent": tmp_path / "par", "symlink": tmp_path / "link"}[where]
    before = tree_digest(tmp_path)
    err = fails_cleanly(run_cli(command, str(src), str(dst), "--force", "--quiet"), command)
    assert "source" in err
    assert tree_digest(tmp_path) == before


def _root_proof_parent() -> str:
    """A directory where even root cannot create anything: /sys (sysfs refuses mkdir with EPERM)."""
    probe = "/sys/qwen3-jax-probe"
    try:
        os.mkdir(probe)
    except OSError:
        return "/sys"
    os.rmdir(probe)
    pytest.skip("/sys accepts new directories here")


@pytest.mark.parametrize("command, where", [("convert", "under a file"), ("export", "under a file"),
                                            ("convert", "read-only"), ("convert", "root-proof"),
                                            ("export", "root-proof")])
def test_an_output_that_cannot_be_written_is_refused(work, tmp_path, command, where):
    # "read-only" needs a user without root's bypass of permissions; "root-proof" (a kernel
    # filesystem) refuses everyone, so the class is tested wherever the suite runs.
    if where == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    parent = tmp_path / "parent"
    if where == "read-only":
        parent.mkdir()
        parent.chmod(0o555)
    elif where == "root-proof":
        parent = _root_proof_parent()
    else:
        parent.write_text("a file, not a directory")
    before, listing = tree_digest(tmp_path), sorted(os.listdir(parent)) if where == "root-proof" else None
    try:
        err = fails_cleanly(run_cli(command, str(work / ("hf" if command == "convert" else "ck")),
                                    os.path.join(parent, "out"), "--quiet"), command)
        assert f"cannot write into {parent}" in err
        assert tree_digest(tmp_path) == before
        assert where != "root-proof" or sorted(os.listdir(parent)) == listing
    finally:
        if where == "read-only":
            parent.chmod(0o755)


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """~100 MB of random weights in 8 files: long enough to be interrupted mid-conversion."""
    cfg = Qwen3Config(vocab_size=4096, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=4, head_dim=64)
    path = tmp_path_factory.mktemp("medium") / "hf"
    write_random_hf_checkpoint(path, cfg, max_shard_size="15MB")
    return path


@pytest.mark.parametrize("stage", ["early", "late"])
def test_ctrl_c_during_convert_exits_130_and_leaves_nothing(medium, tmp_path, stage):
    out = tmp_path / "out"
    # "late": once the first params are in the pending checkpoint; "early": as soon as the temp dir exists.
    marker = "params.partial_save" if stage == "late" else ""

    def started(p):
        tmp = tmp_path / f".out.tmp-{p.pid}"
        return os.path.exists(tmp / marker) if marker else tmp.exists()

    rc, out_text, err = interrupt_cli("convert", str(medium), str(out), "--quiet", when=started)
    assert rc == 130, err
    assert "Traceback" not in err and "cannot schedule" not in err, err
    assert not out.exists() and leftovers(tmp_path) == [], os.listdir(tmp_path)


def test_ctrl_c_during_force_keeps_the_old_output(medium, work, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(work / "ck", out)
    before = tree_digest(out)
    rc, _, err = interrupt_cli("convert", str(medium), str(out), "--quiet", "--force",
                               when=lambda p: os.path.exists(tmp_path / f".out.tmp-{p.pid}" / "params.partial_save"))
    assert rc == 130 and "Traceback" not in err, err
    assert tree_digest(out) == before and leftovers(tmp_path) == []


def test_ctrl_c_during_export_exits_130_and_leaves_nothing(work, tmp_path):
    rc, _, err = interrupt_cli("export", str(work / "ck"), str(tmp_path / "out"), "--quiet",
                               when=lambda p: os.path.exists(tmp_path / f".out.tmp-{p.pid}"))
    if rc == 0:  # the tiny export may finish before the signal lands: then it is complete and kept
        assert (tmp_path / "out" / "config.json").exists()
    else:
        assert rc == 130 and "Traceback" not in err, err
        assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path) == []
