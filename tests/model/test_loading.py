"""Loading HF checkpoint directories: sharded indexes, tied heads, presets, and bad checkpoints that
must fail with one error naming every problem."""

import json

import numpy as np
import pytest

import torch  # the parity reference: a missing torch must fail, not skip
from safetensors.torch import load_file, save_file  # noqa: E402

import qwen3_jax  # noqa: E402
from qwen3_jax import CheckpointError  # noqa: E402
from qwen3_jax.testing import write_hf_checkpoint  # noqa: E402

IDS = np.arange(20).reshape(2, 10) * 7 % 256


def _ref_logits(hf):
    with torch.no_grad():
        return hf(torch.tensor(IDS)).logits.numpy()


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("dense")
    hf = write_hf_checkpoint(path, kind="dense", seed=3, tie_word_embeddings=False)
    return path, _ref_logits(hf)


def _rewrite(src, dst, edit_tensors=None, edit_config=None):
    tensors = load_file(str(src / "model.safetensors"))
    if edit_tensors:
        edit_tensors(tensors)
    dst.mkdir(exist_ok=True)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((src / "config.json").read_text())
    if edit_config:
        edit_config(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_sharded_index_loads(tmp_path):
    hf = write_hf_checkpoint(tmp_path, kind="moe", seed=4, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    np.testing.assert_allclose(np.asarray(qwen3_jax.load(tmp_path).logits(IDS)), _ref_logits(hf), atol=1e-4)


def test_tied_checkpoint_that_also_stores_lm_head_loads(tmp_path):
    src = tmp_path / "src"
    hf = write_hf_checkpoint(src, kind="dense", seed=5, tie_word_embeddings=True)

    def add_head(t):
        t["lm_head.weight"] = t["model.embed_tokens.weight"].clone()

    dst = _rewrite(src, tmp_path / "dst", add_head)
    model = qwen3_jax.load(dst)
    assert "lm_head" not in model.params
    np.testing.assert_allclose(np.asarray(model.logits(IDS)), _ref_logits(hf), atol=1e-4)


def test_missing_wrong_shape_and_unexpected_are_listed_together(dense_dir, tmp_path):
    src, _ = dense_dir

    def damage(t):
        del t["model.layers.1.self_attn.k_proj.weight"]
        t["model.layers.0.mlp.up_proj.weight"] = torch.zeros(127, 64)
        t["model.layers.0.mlp.extra.weight"] = torch.zeros(3)

    bad = _rewrite(src, tmp_path / "bad", damage)
    with pytest.raises(CheckpointError) as e:
        qwen3_jax.load(bad)
    msg = str(e.value)
    assert "3 problems" in msg
    assert "missing: model.layers.1.self_attn.k_proj.weight" in msg
    assert "wrong shape: model.layers.0.mlp.up_proj.weight is [127, 64], config expects [128, 64]" in msg
    assert "unexpected: model.layers.0.mlp.extra.weight" in msg


def test_config_that_does_not_match_the_tensors(dense_dir, tmp_path):
    src, _ = dense_dir
    more_layers = _rewrite(src, tmp_path / "layers", edit_config=lambda c: c.update(num_hidden_layers=4))
    with pytest.raises(CheckpointError) as e:
        qwen3_jax.load(more_layers)
    assert "missing: model.layers.3.input_layernorm.weight" in str(e.value)
    assert "missing: model.layers.3.mlp.down_proj.weight" in str(e.value)

    wider = _rewrite(src, tmp_path / "wider", edit_config=lambda c: c.update(intermediate_size=96))
    with pytest.raises(CheckpointError) as e:
        qwen3_jax.load(wider)
    for layer in range(3):
        assert f"wrong shape: model.layers.{layer}.mlp.gate_proj.weight is [128, 64], config expects [96, 64]" in str(e.value)

    moe_type = _rewrite(src, tmp_path / "moe", edit_config=lambda c: c.update(
        model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16))
    with pytest.raises(CheckpointError, match="missing: model.layers.0.mlp.experts.3.down_proj.weight"):
        qwen3_jax.load(moe_type)


def test_truncated_and_corrupt_files(dense_dir, tmp_path):
    src, _ = dense_dir
    trunc = _rewrite(src, tmp_path / "trunc")
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        qwen3_jax.load(trunc)
    (trunc / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage-header!}")
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        qwen3_jax.load(trunc)
    (trunc / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        qwen3_jax.load(trunc)


def test_not_a_checkpoint_and_unknown_preset(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        qwen3_jax.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a checkpoint directory nor a preset"):
        qwen3_jax.load(tmp_path / "nope")


def test_preset_loads_with_random_weights_by_name():
    model = qwen3_jax.load("tiny-moe", seed=1)
    logits = model.logits(np.array([[1, 2, 3]]))
    assert logits.shape == (1, 3, 151936) and np.isfinite(np.asarray(logits)).all()
    again = qwen3_jax.load("TINY-MOE", seed=1)
    np.testing.assert_array_equal(np.asarray(again.logits(np.array([[1, 2, 3]]))), np.asarray(logits))


def test_bad_inputs_are_refused_with_the_shape_or_value(dense_dir):
    model = qwen3_jax.load(dense_dir[0])
    with pytest.raises(ValueError, match=r"\[batch, seq\] with batch, seq >= 1; got shape \(10,\)"):
        model.logits(np.arange(10))
    with pytest.raises(ValueError, match=r"\[0, 256\); got values in \[0, 300\]"):
        model.logits(np.array([[0, 300]]))
    with pytest.raises(ValueError, match="integers"):
        model.logits(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="attention_mask shape"):
        model.logits(IDS, attention_mask=np.ones((2, 9)))
