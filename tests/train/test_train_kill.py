"""SIGKILL during a step and during a checkpoint save, then the same command again: the losses equal
an uninterrupted run's bit for bit, and only complete checkpoints are ever picked up."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from qwen3_jax.train.checkpoint import latest_complete_step
from qwen3_jax.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY1 = os.path.join(ROOT, "configs", "train", "tiny_stage1.yaml")
STEPS = 6


def _cmd(run):
    return [sys.executable, "-m", "qwen3_jax.cli.main", "train", "--config", TINY1, "--run-dir", run, "--quiet",
            "--steps", str(STEPS), "--set", "log.every=1", "--set", "checkpoint.every=2",
            "--set", "checkpoint.keep=3", "--set", "train.seq_len=64"]


def _env():
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _losses(run):
    return [(r["step"], r["loss"], r["grad_norm"]) for r in read_metrics(run)]


def _run_and_kill(run, when):
    """Starts the command and SIGKILLs it as soon as `when(run)` holds; returns what it saw."""
    p = subprocess.Popen(_cmd(run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            seen = when(run)
            if seen:
                p.send_signal(signal.SIGKILL)
                p.wait()
                return seen
            if p.poll() is not None:
                raise AssertionError(f"the run ended before the kill point: {p.stderr.read().decode()[-2000:]}")
            time.sleep(0.002)
        raise AssertionError("kill point never reached")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _logged(run, step):
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)["step"] >= step:
                    return f"after step {step}"
            except ValueError:
                pass
    return None


def _saving(run):
    d = os.path.join(run, "checkpoints")
    if os.path.isdir(d):
        tmp = [n for n in os.listdir(d) if n.endswith(".orbax-checkpoint-tmp") and n.split(".")[0] != "2"]
        if tmp:
            return tmp[0]
    return None


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("ref") / "run")
    subprocess.run(_cmd(run), env=_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    losses = _losses(run)
    assert [s for s, _, _ in losses] == list(range(1, STEPS + 1))
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("point", ["step", "save"])
def test_sigkill_then_resume_is_bitwise_equal(tmp_path, reference, point):
    run = str(tmp_path / "run")
    if point == "step":
        # killed while a step after 3 runs, once checkpoint 2 (saved asynchronously) is complete
        seen = _run_and_kill(run, lambda r: (latest_complete_step(r) or 0) >= 2 and _logged(r, 3))
    else:
        seen = _run_and_kill(run, _saving)  # killed while checkpoint 4 (or 6) is being written
    assert seen
    before = latest_complete_step(run)
    assert before is not None and before >= 2
    if point == "save":
        assert int(seen.split(".")[0]) > before  # the half-written step is not listed
    subprocess.run(_cmd(run), env=_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _losses(run) == reference  # the same floats, bit for bit
    d = os.path.join(run, "checkpoints")
    for name in os.listdir(d):
        if name.isdigit():
            assert os.path.isfile(os.path.join(d, name, "_CHECKPOINT_METADATA")), name
    assert latest_complete_step(run) == STEPS
