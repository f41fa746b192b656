"""`qwen3-jax train` refuses bad input with one line and exit status 2, before any step, leaving
the run directory as it was."""

import os
import shutil

import pytest

from qwen3_jax.cli.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY1 = os.path.join(ROOT, "configs", "train", "tiny_stage1.yaml")


def _snapshot(d):
    if not os.path.exists(d):
        return None
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, d)] = open(p, "rb").read()
    return out


@pytest.mark.parametrize("extra,message", [
    (["--set", "train.stepz=3"], "unknown keys ['stepz']"),
    (["--set", "mesh=data=16"], "needs 16 devices"),
    (["--set", "mesh=data=3,tensor=2"], "needs 6 devices"),
    (["--set", "data.sources=[{path: /nonexistent/corpus, kind: jsonl}]"], "/nonexistent/corpus"),
    (["--set", "train.seq_len=100000"], "max_position_embeddings"),
    (["--set", "model.preset=qwen3-9b"], "unknown preset"),
    (["--init-from", "/nonexistent/run"], "no complete training checkpoint"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, extra, message):
    run = str(tmp_path / "run")
    code = main(["train", "--config", TINY1, "--run-dir", run, "--quiet"] + extra)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not os.path.exists(run)


def test_run_dir_of_another_config_is_refused(tmp_path, capsys):
    run = str(tmp_path / "run")
    os.makedirs(run)
    with open(TINY1) as f:
        text = f.read()
    with open(os.path.join(run, "config.yaml"), "w") as f:
        f.write(text.replace("lr: 3.0e-3", "lr: 1.0e-3"))  # the YAML form is normalised before comparing
    shutil.copy(TINY1, os.path.join(run, "other.yaml"))
    before = _snapshot(run)
    code = main(["train", "--config", TINY1, "--run-dir", run, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "different config" in err and "optimizer.lr" in err
    assert _snapshot(run) == before


def test_missing_config_file(tmp_path, capsys):
    code = main(["train", "--config", str(tmp_path / "nope.yaml"), "--run-dir", str(tmp_path / "r")])
    assert code == 2 and "nope.yaml" in capsys.readouterr().err
