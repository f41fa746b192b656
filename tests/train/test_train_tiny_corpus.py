"""On the generated tiny corpus: the trainer's next-token weights are the data pipeline's loss mask,
and the loss of tiny stage 1 falls over a few hundred steps."""

import os

import jax
import numpy as np
import pytest

from qwen3_jax.train.config import load_config
from qwen3_jax.train.loop import build_run_data, train
from qwen3_jax.train.loss import next_token_targets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY1 = os.path.join(ROOT, "configs", "train", "tiny_stage1.yaml")


def test_targets_match_the_pipeline_loss_mask():
    it = build_run_data(load_config(TINY1))
    try:
        for _ in range(2):
            b = next(it)
            targets, w = next_token_targets(b["tokens"], b["segment_ids"])
            np.testing.assert_array_equal(np.asarray(w), b["loss_mask"])
            np.testing.assert_array_equal(np.asarray(targets) * b["loss_mask"], b["targets"] * b["loss_mask"])
    finally:
        it.close()


@pytest.mark.slow
def test_tiny_stage1_loss_falls(tmp_path):
    # 150 of the config's 200 steps (about 4 minutes on a quiet 2-core machine); the schedule is the
    # config's own. (Measured: 11.3 at step 10, 1.9 at step 90.)
    cfg = load_config(TINY1, ["log.progress=false", "log.peak_flops=1e11", "checkpoint.every=1000"])
    r = train(cfg, tmp_path / "run", devices=jax.devices()[:1], stop_at=150)
    losses = [m["loss"] for m in r.metrics]
    assert r.step == 150
    assert losses[0] > 9.0  # near log(151936) = 11.9 at the start
    assert np.mean(losses[-3:]) < 0.5 * losses[0]
