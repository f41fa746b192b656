"""Weights that are not what they claim: safetensors headers as strict as the safetensors library,
one validation for `load` and `convert` (dtypes, NaN/Inf), and checksums of converted arrays."""

from __future__ import annotations

import json
import os
import shutil
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import qwen3_jax
from ckpt_helpers import make_hf_dir
from qwen3_jax.checkpoint.safetensors_io import CheckpointError, SafetensorsFile
from qwen3_jax.testing import run_cli
from test_ckpt_cli_safety import fails_cleanly, leftovers, tree_digest


def _write_raw(path, header: dict | list, data: bytes):
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


A = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
B = {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}
BAD_HEADERS = {
    "overlap": ({"a": A, "b": {**B, "data_offsets": [4, 12]}}, 16, "overlaps"),
    "same bytes": ({"a": A, "b": {**B, "data_offsets": [0, 8]}}, 8, "overlaps"),
    "gap": ({"a": A, "b": {**B, "data_offsets": [12, 20]}}, 20, "gap"),
    "trailing bytes": ({"a": A}, 12, "cover 8 of the 12"),
    "list header": ([A], 8, "not an object"),
    "bool shape": ({"a": {**A, "shape": [True, 2]}}, 8, "bad header entry"),
    "string offsets": ({"a": {**A, "data_offsets": ["0", "8"]}}, 8, "bad header entry"),
    "unknown dtype": ({"a": {**A, "dtype": "F8_E9"}}, 8, "unknown dtype"),
    "metadata not strings": ({"__metadata__": {"format": 1}, "a": A}, 8, "__metadata__"),
    "size mismatch": ({"a": {**A, "shape": [3]}}, 8, "does not match shape"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_headers_the_safetensors_library_rejects_are_rejected(tmp_path, case):
    header, nbytes, message = BAD_HEADERS[case]
    f = tmp_path / "x.safetensors"
    _write_raw(f, header, bytes(nbytes))
    with pytest.raises(Exception):  # the reference: safetensors refuses every one of these files
        load_file(str(f))
    with pytest.raises(CheckpointError, match=message):
        SafetensorsFile(f)


def test_a_valid_file_is_accepted_like_the_library_does(tmp_path):
    f = tmp_path / "x.safetensors"
    save_file({"b": np.arange(3, dtype=np.float32), "a": np.ones((2, 2), np.float16)}, str(f), metadata={"k": "v"})
    sf = SafetensorsFile(f)
    np.testing.assert_array_equal(sf.get("b"), load_file(str(f))["b"])
    assert sf.metadata == {"k": "v"}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "hf"
    make_hf_dir(path)
    return path


def _edited(good, tmp_path, edit):
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    save_file(edit(load_file(bad / "model.safetensors")), bad / "model.safetensors", metadata={"format": "pt"})
    return bad


def _overlapping(good, tmp_path):
    """The good checkpoint with two equally sized tensors pointing at the same bytes."""
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    f = bad / "model.safetensors"
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    a, b = "model.layers.0.input_layernorm.weight", "model.layers.1.input_layernorm.weight"
    header[b]["data_offsets"] = header[a]["data_offsets"]
    h = json.dumps(header, separators=(",", ":")).encode()
    assert len(h) <= n
    h = h.ljust(n)
    f.write_bytes(raw[:8] + h + raw[8 + n:])
    return bad


@pytest.mark.parametrize("case", ["overlap", "int", "bool", "nan", "inf"])
def test_load_and_convert_refuse_the_same_bad_checkpoints(good, tmp_path, case):
    key = "model.layers.0.mlp.up_proj.weight"

    def edit(t):
        if case in ("int", "bool"):
            t[key] = t[key].astype(np.int32 if case == "int" else np.bool_)
        else:
            t[key] = t[key].copy()
            t[key][3, 5] = np.nan if case == "nan" else -np.inf
        return t

    bad = _overlapping(good, tmp_path) if case == "overlap" else _edited(good, tmp_path, edit)
    message = {"overlap": "overlaps", "int": "wrong dtype: " + key + " is int32",
               "bool": "wrong dtype: " + key + " is bool", "nan": "NaN or Inf values: " + key,
               "inf": "NaN or Inf values: " + key}[case]
    with pytest.raises(CheckpointError, match=message):
        qwen3_jax.load(bad)
    before = tree_digest(tmp_path)
    err = fails_cleanly(run_cli("convert", str(bad), str(tmp_path / "out"), "--quiet"), "convert", one_line=False)
    assert message in err
    assert tree_digest(tmp_path) == before and leftovers(tmp_path) == []
    if case == "nan":  # the check can be skipped on purpose
        model = qwen3_jax.load(bad, verify=False)
        assert np.isnan(np.asarray(model.params["layers"]["mlp"]["up_proj"]["kernel"][0])).any()
        assert run_cli("convert", str(bad), str(tmp_path / "out"), "--quiet", "--no-finite-check").returncode == 0


def _flip_a_data_byte(ck):
    """Flips one byte in the middle of the largest array-data file of a converted directory."""
    files = [os.path.join(r, f) for r, _, fs in os.walk(ck / "params") for f in fs if os.sep + "d" + os.sep in
             os.path.join(r, f) + os.sep and "ocdbt.process" in r]
    target = max(files, key=os.path.getsize)
    data = bytearray(open(target, "rb").read())
    data[len(data) // 2] ^= 0x10
    open(target, "wb").write(bytes(data))


def test_flipped_bytes_in_a_converted_checkpoint_are_detected(good, tmp_path):
    ck = tmp_path / "ck"
    assert run_cli("convert", str(good), str(ck), "--quiet").returncode == 0
    sums = json.loads((ck / "checksums.json").read_text())["crc32"]
    assert len(sums) == 14 and "embed_tokens/embedding" in sums
    qwen3_jax.load(ck)  # intact: verifies silently
    _flip_a_data_byte(ck)
    with pytest.raises(CheckpointError, match="is corrupt"):
        qwen3_jax.load(ck)
    with pytest.raises(CheckpointError, match="is corrupt"):
        qwen3_jax.load(ck, dtype="bfloat16")  # cast while reading: checked on the stored bytes
    qwen3_jax.load(ck, verify=False)  # skipping the check loads the damaged weights
    err = fails_cleanly(run_cli("export", str(ck), str(tmp_path / "hf"), "--quiet"), "export")
    assert "is corrupt" in err and not (tmp_path / "hf").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["manifest", "data", "checksums"])
def test_a_damaged_orbax_directory_is_named(good, tmp_path, damage):
    ck = tmp_path / "ck"
    assert run_cli("convert", str(good), str(ck), "--quiet").returncode == 0
    if damage == "manifest":
        os.remove(ck / "params" / "state" / "manifest.ocdbt")
    elif damage == "data":
        for r, _, fs in os.walk(ck / "params" / "state"):
            for f in fs:
                if "ocdbt.process" in r and os.sep + "d" in r:
                    os.remove(os.path.join(r, f))
    else:
        (ck / "checksums.json").write_text("[1, 2")
    with pytest.raises(CheckpointError, match=str(ck)):
        qwen3_jax.load(ck)
    before = tree_digest(tmp_path)
    err = fails_cleanly(run_cli("export", str(ck), str(tmp_path / "out"), "--quiet"), "export")
    assert str(ck) in err and tree_digest(tmp_path) == before


def test_the_name_table_alone_knows_checkpoint_names():
    from qwen3_jax.checkpoint import hf_load, hf_mapping
    from qwen3_jax.config import Qwen3Config
    from qwen3_jax.testing import SMALL_DENSE

    tied, untied = Qwen3Config(**SMALL_DENSE, tie_word_embeddings=True), Qwen3Config(**SMALL_DENSE)
    assert hf_mapping.is_ignored("model.layers.0.self_attn.rotary_emb.inv_freq", untied)
    assert hf_mapping.is_ignored("lm_head.weight", tied) and not hf_mapping.is_ignored("lm_head.weight", untied)
    assert not hf_mapping.is_ignored("model.layers.0.mlp.extra.weight", tied)
    import inspect

    assert "inv_freq" not in inspect.getsource(hf_load) and "lm_head" not in inspect.getsource(hf_load)


@pytest.mark.parametrize("left_out", ["layers/mlp/up_proj/kernel", "all"])
def test_a_checksum_table_with_a_missing_entry_is_refused(good, tmp_path, left_out):
    # A table that lacks a param must not let that param's data through unverified (it did,
    # silently, even with a flipped byte in it).
    ck = tmp_path / "ck"
    assert run_cli("convert", str(good), str(ck), "--quiet").returncode == 0
    table = json.loads((ck / "checksums.json").read_text())
    assert left_out == "all" or left_out in table["crc32"]
    table["crc32"] = {} if left_out == "all" else {k: v for k, v in table["crc32"].items() if k != left_out}
    (ck / "checksums.json").write_text(json.dumps(table))
    message = "checksums.json has no checksum for " + ("" if left_out == "all" else left_out)
    with pytest.raises(CheckpointError, match=message):
        qwen3_jax.load(ck)
    qwen3_jax.load(ck, verify=False)  # skipping the check on purpose still loads
    before = tree_digest(tmp_path)
    err = fails_cleanly(run_cli("export", str(ck), str(tmp_path / "hf"), "--quiet"), "export")
    assert message in err and str(ck) in err and tree_digest(tmp_path) == before and leftovers(tmp_path) == []
