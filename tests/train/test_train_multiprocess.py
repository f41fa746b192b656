"""Two processes x 4 CPU devices (jax.distributed on localhost) train like one process x 8 devices:
the same losses, each process reading its own data shard, Orbax saving across processes."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from qwen3_jax.train.checkpoint import latest_complete_step
from qwen3_jax.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY1 = os.path.join(ROOT, "configs", "train", "tiny_stage1.yaml")
STEPS = 3


def _cmd(run):
    return [sys.executable, "-m", "qwen3_jax.cli.main", "train", "--config", TINY1, "--run-dir", run, "--quiet",
            "--steps", str(STEPS), "--set", "mesh=data=2,fsdp=2,tensor=2", "--set", "data.num_shards=2",
            "--set", "log.every=1", "--set", "log.peak_flops=1e11", "--set", "checkpoint.every=2",
            "--set", "train.seq_len=64"]


def _env(devices, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3_JAX_")}
    env.update(PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    one = str(tmp_path / "one")
    subprocess.run(_cmd(one), env=_env(8), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)
    two = str(tmp_path / "two")
    port = _free_port()
    procs = [subprocess.Popen(_cmd(two), env=_env(4, QWEN3_JAX_COORDINATOR=f"127.0.0.1:{port}",
                                                   QWEN3_JAX_NUM_PROCESSES="2", QWEN3_JAX_PROCESS_ID=str(i)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=900)
        errs.append(err.decode()[-3000:])
    assert all(p.returncode == 0 for p in procs), errs
    a, b = read_metrics(one), read_metrics(two)
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5)
    np.testing.assert_allclose([r["grad_norm"] for r in b], [r["grad_norm"] for r in a], rtol=1e-4)
    assert latest_complete_step(two) == STEPS
    data_files = sorted(os.listdir(os.path.join(two, "checkpoints", str(STEPS), "data")))
    assert "process_0-of-2.json" in data_files and "process_1-of-2.json" in data_files
