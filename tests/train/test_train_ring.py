"""Training steps with ring attention on a sequence=4 mesh (contiguous and zig-zag) give the
losses and gradient norms of one device with plain attention."""

import jax
import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.config import ConfigError
from qwen3_jax.train.step import build_train_step

from train_helpers import packed_batch, tiny_config


def _losses(cfg, mesh, n=2):
    ts = build_train_step(cfg, mesh)
    state = ts.init_state()
    out = []
    for s in range(n):
        state, m = ts(state, ts.place_batch(packed_batch(4, 32, 256, seed=s)))
        out.append(jax.device_get(m))
    return out


@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
def test_ring_steps_equal_one_device(layout):
    one = _losses(tiny_config(), qwen3_jax.make_mesh("data=1", devices=jax.devices()[:1]))
    cfg = tiny_config(model={"attention_impl": "ring", "ring_layout": layout})
    ring = _losses(cfg, qwen3_jax.make_mesh("sequence=4", devices=jax.devices()[:4]))
    for a, b in zip(one, ring):
        for k in ("loss", "grad_norm"):
            np.testing.assert_allclose(b[k], a[k], rtol=2e-5, err_msg=k)


def test_zigzag_needs_two_chunks_per_device():
    cfg = tiny_config(model={"attention_impl": "ring", "ring_layout": "zigzag"}, train={"seq_len": 36})
    with pytest.raises(ConfigError, match="multiple of 2 x sequence=8"):
        build_train_step(cfg, qwen3_jax.make_mesh("sequence=4", devices=jax.devices()[:4]))
    with pytest.raises(ConfigError, match="model.ring_layout='spiral'"):
        tiny_config(model={"ring_layout": "spiral"}).validate()
