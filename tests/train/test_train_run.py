"""The training run in-process: resuming equals an uninterrupted run bit for bit, a NaN loss stops
the run without a new checkpoint, metrics are written, and --init-from checks shapes."""

import json
import os

import jax
import numpy as np
import pytest

from qwen3_jax.checkpoint.safetensors_io import CheckpointError
from qwen3_jax.train.checkpoint import latest_complete_step
from qwen3_jax.train.loop import train
from qwen3_jax.train.metrics import NonFiniteLoss, read_metrics

from train_helpers import TINY_MODEL, BatchStream, tiny_config

ONE = jax.devices()[:1]


def _cfg(**kw):
    sections = {"train": {"steps": 6, "batch_size": 4, "seq_len": 32}, "checkpoint": {"every": 2, "keep": 2},
                "log": {"every": 1, "tensorboard": True, "progress": False, "peak_flops": 1e11}}
    for k, v in kw.items():
        sections[k] = {**sections.get(k, {}), **v}
    return tiny_config(**sections)


def test_resume_equals_uninterrupted(tmp_path):
    cfg = _cfg()
    full = train(cfg, tmp_path / "full", data=BatchStream(4, 32, 256), devices=ONE)
    part = train(cfg, tmp_path / "part", data=BatchStream(4, 32, 256), devices=ONE, stop_at=3)
    assert part.step == 3 and latest_complete_step(tmp_path / "part") == 3
    # A fresh iterator: the restored data position must be what makes the batches line up.
    rest = train(cfg, tmp_path / "part", data=BatchStream(4, 32, 256), devices=ONE)
    assert rest.resumed_from == 3 and rest.step == 6
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    assert [r["step"] for r in b] == list(range(1, 7))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bitwise
    assert [r["grad_norm"] for r in a] == [r["grad_norm"] for r in b]
    for r in a:
        assert {"step", "loss", "learning_rate", "grad_norm", "tokens_per_second", "mfu"} <= set(r)
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "full" / "tb"))
    assert sorted(int(s) for s in os.listdir(tmp_path / "full" / "checkpoints") if s.isdigit()) == [4, 6]


def test_nan_loss_stops_without_replacing_checkpoints(tmp_path):
    # lr 0 at step 1 (warmup), then 1e30: the params explode and a later loss is not finite.
    cfg = _cfg(optimizer={"lr": 1e30, "warmup_steps": 1000, "clip_norm": None},
               checkpoint={"every": 1, "keep": 10})
    with pytest.raises(NonFiniteLoss, match=r"step \d+: loss is") as e:
        train(cfg, tmp_path / "r", data=BatchStream(4, 32, 256), devices=ONE)
    bad = int(str(e.value).split()[1].rstrip(":"))
    assert bad >= 2
    assert latest_complete_step(tmp_path / "r") == bad - 1
    assert not os.path.exists(tmp_path / "r" / "checkpoints" / str(bad))
    assert np.isfinite(read_metrics(tmp_path / "r")[0]["loss"])


def test_init_from_refuses_params_of_another_shape(tmp_path):
    train(_cfg(train={"steps": 2}), tmp_path / "a", data=BatchStream(4, 32, 256), devices=ONE)
    wider = tiny_config(dict(TINY_MODEL, hidden_size=48), train={"steps": 2, "batch_size": 4, "seq_len": 32},
                        log={"progress": False, "peak_flops": 1e11})
    with pytest.raises(CheckpointError, match="do not fit"):
        train(wider, tmp_path / "b", data=BatchStream(4, 32, 256), devices=ONE, init_from=str(tmp_path / "a"))
    assert not os.path.exists(tmp_path / "b")
    # The same shapes with a new RoPE base (a stage change) start from the stored params.
    abf = tiny_config(dict(TINY_MODEL, rope_theta=1e4), train={"steps": 1, "batch_size": 4, "seq_len": 32},
                      log={"progress": False, "peak_flops": 1e11})
    r = train(abf, tmp_path / "c", data=BatchStream(4, 32, 256), devices=ONE, init_from=str(tmp_path / "a"))
    assert r.step == 1
    assert json.load(open(tmp_path / "c" / "checkpoints" / "1" / "meta" / "metadata"))["model_config"][
        "rope_theta"] == 1e4
