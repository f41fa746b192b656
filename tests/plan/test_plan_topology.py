"""Cloud TPU slice names -> chip grids and per-chip figures; FLOPs counting; mesh candidates."""

import pytest

from qwen3_jax.plan import flops
from qwen3_jax.plan.search import candidate_meshes, screen
from qwen3_jax.plan.topology import CHIPS, TopologyError, parse_slice, slices_of
from qwen3_jax.presets import get_preset


@pytest.mark.parametrize("name, topo, chips", [
    ("v5p-8", "v5p:2x2x1", 4), ("v5p-16", "v5p:2x2x2", 8), ("v5p-32", "v5p:2x2x4", 16),
    ("v5p-64", "v5p:2x4x4", 32), ("v5p-128", "v5p:4x4x4", 64), ("v5p-256", "v5p:4x4x8", 128),
    ("v5p-512", "v5p:4x8x8", 256), ("v4-32", "v4:2x2x4", 16), ("v6e-8", "v6e:2x4", 8),
    ("v6e-256", "v6e:16x16", 256), ("v5litepod-16", "v5e:4x4", 16), ("v5e-4", "v5e:2x2", 4),
    ("v6e-1", "v6e:1x1", 1), ("v5p:4x4x12", "v5p:4x4x12", 192),
])
def test_cloud_names(name, topo, chips):
    s = parse_slice(name)
    assert s.topology_name == topo and s.chips == chips


def test_chip_figures_are_the_published_ones():
    assert CHIPS["v5p"].hbm_bytes == 95 * 10**9 and CHIPS["v5p"].peak_bf16_flops == 459e12
    assert CHIPS["v6e"].hbm_bytes == 32 * 10**9 and CHIPS["v6e"].peak_bf16_flops == 918e12
    assert CHIPS["v5e"].hbm_bytes == 16 * 10**9 and CHIPS["v4"].hbm_bytes == 32 * 2**30


@pytest.mark.parametrize("bad, needle", [
    ("v5p-7", "multiple of 2"), ("v7x-8", "unknown TPU generation"), ("tpu-8", "unknown TPU slice"),
    ("v6e-512", "1 to 256"), ("v5p:2x2", "3 axes"), ("v6e-12", "topology string"),
])
def test_bad_names(bad, needle):
    with pytest.raises(TopologyError, match=needle):
        parse_slice(bad)


def test_slices_of_grow_by_doubling():
    names = [s.cloud_name for s in slices_of("v5p", min_chips=16, max_chips=128)]
    assert names == ["v5p-32", "v5p-64", "v5p-128", "v5p-256"]


def test_train_flops_dense_is_six_n_plus_attention():
    cfg = get_preset("Qwen3-8B")
    B, T = 2, 4096
    n = flops.matmul_params_per_token(cfg)
    # 6·N per token from the matmul weights, within 10% of 6 x the param count minus the embedding
    total = 8_190_735_360 - cfg.vocab_size * cfg.hidden_size
    assert abs(n - total) / total < 0.01
    attn = 3 * 4 * cfg.num_attention_heads * cfg.head_dim * cfg.num_hidden_layers * T * (T + 1) / 2 * B
    assert flops.train_flops(cfg, B, T) == pytest.approx(6 * n * B * T + attn)


def test_moe_counts_active_experts_only():
    cfg = get_preset("Qwen3-30B-A3B")
    n = flops.matmul_params_per_token(cfg)
    assert 3.0e9 < n < 3.5e9  # about 3.3B active parameters (the model card's "A3B") incl. the LM head


def test_screen_rejects_with_reasons():
    cfg = get_preset("Qwen3-30B-A3B")
    s = parse_slice("v5p-32")
    tiny = get_preset("tiny-moe")
    assert "does not divide the 8 experts" in screen(tiny, s, {"expert": 16}, "train", 128, 16, None, None).reason
    assert "does not divide the 4 attention heads" in screen(tiny, s, {"tensor": 8, "data": 2}, "train", 128, 16,
                                                             None, None).reason
    assert screen(cfg, s, {"fsdp": 2, "expert": 8}, "train", 4096, 256, None, None).reason is None
    r = screen(cfg, s, {"data": 16}, "train", 4096, 8, None, None)
    assert "do not split over data×fsdp×expert=16" in r.reason
    r = screen(get_preset("Qwen3-235B-A22B"), parse_slice("v5p-8"), {"fsdp": 4}, "train", 4096, 8, None, None)
    assert "alone need" in r.reason
    meshes = candidate_meshes(cfg, 16)
    assert {"data": 1, "fsdp": 2, "expert": 8, "tensor": 1} in meshes
    assert all(m["data"] * m["fsdp"] * m["expert"] * m["tensor"] == 16 for m in meshes)
