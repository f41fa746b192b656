"""HF -> Orbax -> HF is bit-exact, and the exported directory loads in transformers unchanged."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from qwen3_jax.checkpoint.convert import convert
from qwen3_jax.checkpoint.export import export
from qwen3_jax.cli.main import main
from ckpt_helpers import AUX, bits, hf_logits, make_hf_dir, read_all

CASES = [("dense", "float32"), ("dense", "bfloat16"), ("moe", "float32"), ("moe", "bfloat16")]


@pytest.fixture(scope="module", params=CASES, ids=["-".join(c) for c in CASES])
def roundtrip(request, tmp_path_factory):
    kind, dtype = request.param
    root = tmp_path_factory.mktemp(f"{kind}-{dtype}")
    model = make_hf_dir(root / "hf", kind=kind, dtype=dtype, max_shard_size="200KB")
    # Through the command line, as users run it.
    assert main(["convert", str(root / "hf"), str(root / "orbax"), "--quiet"]) == 0
    assert main(["export", str(root / "orbax"), str(root / "out"), "--max-shard-size", "300KB", "--quiet"]) == 0
    return kind, dtype, model, root


def test_every_tensor_is_bit_exact(roundtrip):
    kind, dtype, _, root = roundtrip
    src, out = read_all(root / "hf"), read_all(root / "out")
    assert sorted(src) == sorted(out)
    for name, t in src.items():
        assert out[name].dtype == t.dtype == getattr(torch, dtype), name
        assert out[name].shape == t.shape, name
        assert torch.equal(bits(out[name]), bits(t)), name
    if kind == "moe":  # per-expert hub names, not our stacked layout
        assert "model.layers.2.mlp.experts.7.down_proj.weight" in out


def test_shards_index_and_side_files(roundtrip):
    _, _, _, root = roundtrip
    out = root / "out"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) > 1 and files == {f for f in os.listdir(out) if f.endswith(".safetensors")}
    tensor_bytes = sum(t.numel() * t.element_size() for t in read_all(out).values())
    assert index["metadata"]["total_size"] == tensor_bytes
    for f in files:  # one tensor may exceed the limit alone; none of ours does at this size
        assert os.path.getsize(out / f) <= 300_000 + 16_384, f
    for name, text in AUX.items():
        assert (out / name).read_text() == text and (root / "orbax" / name).read_text() == text
    assert (out / "generation_config.json").exists()
    assert not [n for n in os.listdir(root) if n.startswith(".")], "temporary directories left behind"


def test_transformers_loads_the_export_with_the_same_logits(roundtrip):
    from transformers import AutoModelForCausalLM

    _, dtype, model, root = roundtrip
    # Both sides go through from_pretrained: a model cast with `.to(bfloat16)` after creation also
    # casts its RoPE buffers, which from_pretrained keeps in float32.
    original = AutoModelForCausalLM.from_pretrained(root / "hf", dtype=getattr(torch, dtype)).eval()
    again = AutoModelForCausalLM.from_pretrained(root / "out", dtype=getattr(torch, dtype)).eval()
    assert type(again) is type(model)
    assert again.config.num_hidden_layers == model.config.num_hidden_layers
    for key in ("hidden_size", "num_key_value_heads", "head_dim", "num_experts", "num_experts_per_tok"):
        assert getattr(again.config, key, None) == getattr(model.config, key, None), key
    np.testing.assert_array_equal(hf_logits(again), hf_logits(original))


def test_convert_to_bfloat16_rounds_like_torch(tmp_path):
    make_hf_dir(tmp_path / "hf", kind="moe")
    convert(tmp_path / "hf", tmp_path / "orbax", dtype="bfloat16", progress=False)
    export(tmp_path / "orbax", tmp_path / "out", progress=False)
    src, out = read_all(tmp_path / "hf"), read_all(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    for name, t in src.items():
        assert out[name].dtype == torch.bfloat16
        assert torch.equal(bits(out[name]), bits(t.to(torch.bfloat16))), name


def test_tied_embeddings_round_trip(tmp_path):
    from transformers import AutoModelForCausalLM

    make_hf_dir(tmp_path / "hf", kind="dense", tie_word_embeddings=True)
    convert(tmp_path / "hf", tmp_path / "orbax", progress=False)
    export(tmp_path / "orbax", tmp_path / "out", progress=False)
    src, out = read_all(tmp_path / "hf"), read_all(tmp_path / "out")
    assert "lm_head.weight" not in out and sorted(out) == sorted(n for n in src if n != "lm_head.weight")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"] is True
    assert not (tmp_path / "out" / "model.safetensors.index.json").exists()  # one file: no index
    original = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    np.testing.assert_array_equal(hf_logits(again), hf_logits(original))
