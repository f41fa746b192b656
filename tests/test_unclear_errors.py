"""Inputs that used to end in a raw traceback from deep inside: each gives one error naming the input
and what is expected (exit status 2 on the CLI, nothing written)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.config import ConfigError, Qwen3Config
from qwen3_jax.testing import SMALL_DENSE, run_cli
from qwen3_jax.text.tokenizer import CACHE_ENV

GOOD = {"model_type": "qwen3", **SMALL_DENSE}


def _cli_fails(proc, command, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.startswith(f"qwen3-jax {command}: error:"), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr
    return proc.stderr


@pytest.mark.parametrize("change, message", [
    ({"vocab_size": "256"}, "vocab_size='256' must be an integer, got str"),
    ({"hidden_size": True}, "must be an integer"),
    ({"num_hidden_layers": None}, "num_hidden_layers=None must be an integer"),
    ({"rms_norm_eps": "1e-6"}, "rms_norm_eps='1e-6' must be a finite number"),
    ({"rope_theta": "1e6"}, "rope_theta='1e6' must be a number"),
    ({"tie_word_embeddings": "false"}, "tie_word_embeddings='false' must be true or false"),
    ({"rope_scaling": [1, 2]}, "rope_scaling must be an object"),
    ({"max_position_embeddings": 0}, "max_position_embeddings=0 must be a positive integer"),
    ({"max_position_embeddings": -5}, "max_position_embeddings=-5 must be a positive integer"),
    ({"eos_token_id": "x"}, "eos_token_id='x' must be a token id"),
    ({"model_type": "qwen3_moe", "num_experts": "8"}, "num_experts='8' must be an integer"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": "4"}}, "rope_scaling factor='4' must be a finite number >= 1"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": True}}, "rope_scaling factor=True must be a finite number"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": "128"}},
     "rope_scaling original_max_position_embeddings='128' must be an integer >= 1"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4, "beta_fast": "x"}}, "rope_scaling beta_fast='x' must be a"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4, "beta_slow": 0}}, "rope_scaling beta_slow=0 must be a"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4, "attention_factor": "1.2"}},
     "rope_scaling attention_factor='1.2' must be a"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": "4", "rope_theta": 1e6}}, "rope_scaling factor='4'"),
    ({"dual_chunk_attention_config": {"chunk_size": 8.0, "local_size": 2}},
     "dual_chunk_attention_config chunk_size=8.0 must be an integer"),
    ({"dual_chunk_attention_config": {"chunk_size": 2**40, "local_size": 2}},
     "dual_chunk_attention_config chunk_size=1099511627776 must be an integer >= 0 and < 2"),
    ({"mlp_only_layers": [1.5]}, r"mlp_only_layers=\[1.5\] must be a list of integer layer indices"),
    ({"model_type": "qwen3_moe", "num_experts": 4, "mlp_only_layers": [True]}, "mlp_only_layers=.True"),
    ({"vocab_size": 2**80}, "vocab_size=1208925819614629174706176 must be below 2"),
    ({"eos_token_id": 2**40}, "eos_token_id=1099511627776 must be a token id"),
])
def test_config_values_of_the_wrong_type_or_range(tmp_path, change, message):
    (tmp_path / "config.json").write_text(json.dumps({**GOOD, **change}))
    with pytest.raises(ConfigError, match=message) as e:
        Qwen3Config.from_json_file(tmp_path / "config.json")
    assert str(tmp_path / "config.json") in str(e.value)


@pytest.mark.parametrize("change, message", [
    ({"vocab_size": "256"}, "vocab_size='256' must be an integer, got str"),
    ({"hidden_size": True}, "hidden_size=True must be an integer"),
    ({"num_hidden_layers": None}, "num_hidden_layers=None must be an integer"),
    ({"max_position_embeddings": 0}, "max_position_embeddings=0 must be a positive integer"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": "128"}},
     "rope_scaling original_max_position_embeddings='128' must be an integer"),
    ({"vocab_size": 2**80}, "vocab_size=1208925819614629174706176 must be below 2**31"),
])
def test_config_values_of_the_wrong_type_on_the_cli(tmp_path, change, message):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({**GOOD, **change}))
    _cli_fails(run_cli("convert", str(src), str(tmp_path / "out"), "--quiet"), "convert", message,
               str(src / "config.json"))
    assert sorted(os.listdir(tmp_path)) == ["src"] and os.listdir(src) == ["config.json"]


@pytest.mark.parametrize("content, message", [
    (b"[1, 2]", "must hold a JSON object, got a list"), (b'"qwen3"', "got a str"),
    (b'{"model_type": "qwen3", "x": "caf\xe9"}', "not UTF-8"), (None, "is a directory"),
])
def test_config_file_that_is_not_a_json_object(tmp_path, content, message):
    src = tmp_path / "src"
    src.mkdir()
    if content is None:
        (src / "config.json").mkdir()
    else:
        (src / "config.json").write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        qwen3_jax.load(src)
    _cli_fails(run_cli("convert", str(src), str(tmp_path / "out"), "--quiet"), "convert", message)
    assert sorted(os.listdir(tmp_path)) == ["src"]


@pytest.mark.parametrize("index", [[1], {"weight_map": ["a"]}, {"weight_map": {"a": "../x.safetensors"}}, {}])
def test_safetensors_index_of_the_wrong_type(tmp_path, index):
    (tmp_path / "config.json").write_text(json.dumps(GOOD))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(qwen3_jax.CheckpointError, match="not a valid safetensors index"):
        qwen3_jax.load(tmp_path)
    out = tmp_path.parent / f"{tmp_path.name}-out"
    _cli_fails(run_cli("convert", str(tmp_path), str(out), "--quiet"), "convert", "not a valid safetensors index")
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors.index.json"]


@pytest.mark.parametrize("which", ["generate", "chat"])
def test_bad_generation_config_on_the_cli(tmp_path, cache, which):
    # The shipped demo model (it has its own tokenizer) with a broken generation_config.json: the
    # session fails before it starts, naming the file (chat used to print it per turn and exit 0).
    from qwen3_jax.api import demo_dir

    src = tmp_path / "demo"
    shutil.copytree(demo_dir(), src)
    for text, message in (("{", "not a readable JSON file"), ('{"eos_token_id": "x"}', "eos_token_id must be")):
        (src / "generation_config.json").write_text(text)
        args = ["--prompt", "hi"] if which == "generate" else ["--say", "hi"]
        p = run_cli(which, "--model", str(src), "--max-new-tokens", "2", *args, env=cache)
        _cli_fails(p, which, str(src / "generation_config.json"), message)
    assert sorted(os.listdir(tmp_path)) == ["demo"]


def test_bad_generation_config_names_the_file(tmp_path):
    from qwen3_jax.generate.engine import default_stop_tokens

    cfg = Qwen3Config(**SMALL_DENSE)
    for text in ("{", "[1]", '{"eos_token_id": "x"}'):
        (tmp_path / "generation_config.json").write_text(text)
        with pytest.raises(ValueError, match="generation_config.json"):
            default_stop_tokens(cfg, tmp_path)


@pytest.mark.parametrize("spec, message", [("data=2,data=4", "axis 'data' is given twice"), (None, "got NoneType"),
                                           ({"data": "2"}, "sizes must be integers"), (8, "got int")])
def test_bad_mesh_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        qwen3_jax.make_mesh(spec)


def test_mesh_spec_on_the_cli():
    _cli_fails(run_cli("generate", "--model", "tiny-dense", "--prompt", "hi", "--mesh", "data=1,data=1"),
               "generate", "given twice")


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "seed must be an integer in [0, 2**32)"), (["--seed", str(2**64)], "seed must be an integer"),
    (["--temperature", "inf"], "temperature must be finite"), (["--top-p", "nan"], "top_p must be finite"),
    (["--temperature", "1e39"], "temperature must lie in [0, 1e+30]"),
])
def test_sampling_values_on_the_cli(args, message):
    _cli_fails(run_cli("generate", "--model", "tiny-dense", "--prompt", "hi", *args), "generate", message)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return {CACHE_ENV: str(tmp_path_factory.mktemp("tok_cache"))}


def test_non_utf8_text_on_the_command_line(cache):
    exe = os.path.join(os.path.dirname(sys.executable), "qwen3-jax")
    for flag in ("--prompt", "--system"):
        args = [exe, "generate", "--model", "tiny-dense", "--max-new-tokens", "2", "--prompt", "hi", flag, b"caf\xe9"]
        p = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **cache}, timeout=300)
        _cli_fails(p, "generate", f"{flag} b'caf\\xe9' is not UTF-8 text")


def test_a_non_utf8_chat_line_is_skipped_and_the_session_goes_on(cache):
    exe = os.path.join(os.path.dirname(sys.executable), "qwen3-jax")
    p = subprocess.run([exe, "chat", "--model", "tiny-dense", "--max-new-tokens", "2", "--no-think"],
                       input=b"caf\xe9\nhello\n", capture_output=True, env={**os.environ, **cache}, timeout=300)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    assert p.returncode == 0 and "Traceback" not in err, err
    assert "not UTF-8 text" in out and "> hello" in out and out.count("[answer]") + out.count("tokens,") >= 1


def test_chat_with_stdin_closed(cache):
    exe = os.path.join(os.path.dirname(sys.executable), "qwen3-jax")
    p = subprocess.run([exe, "chat", "--model", "tiny-dense", "--max-new-tokens", "2", "--say", "hi"],
                       capture_output=True, text=True, env={**os.environ, **cache}, timeout=300,
                       preexec_fn=lambda: os.close(0))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "> hi" in p.stdout


@pytest.mark.parametrize("path", [5, None, b"tiny-dense", ["tiny-dense"]])
def test_load_refuses_a_path_that_is_not_a_string(path):
    message = f"path must be a checkpoint directory or a preset name .*got {type(path).__name__}"
    with pytest.raises(ValueError, match=message):
        qwen3_jax.load(path)


def test_source_dir_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Qwen3Config(**SMALL_DENSE)
    model = qwen3_jax.Model(cfg, qwen3_jax.init_params(cfg), source_dir="ck")
    assert model.source_dir == str(tmp_path / "ck")


@pytest.fixture(scope="module")
def small_model():
    cfg = Qwen3Config(**SMALL_DENSE)
    return qwen3_jax.Model(cfg, qwen3_jax.init_params(cfg))


@pytest.mark.parametrize("kw, message", [
    (dict(messages="hi"), "messages must be a list"),
    (dict(enable_thinking="yes"), "enable_thinking must be True or False"),
    (dict(thinking_budget=1.5), "thinking_budget must be an integer"),
    (dict(sampling={"temperature": 0.7}), "sampling must be a qwen3_jax.Sampling"),
    (dict(tools="abc"), "tools must be a list"),
    (dict(tokenizer="qwen"), "tokenizer must be a qwen3_jax.Tokenizer"),
    (dict(foo=1), "unknown argument foo=1: the extra keywords are sampling fields"),
    (dict(temprature=0.7, top_p=0.9), "unknown argument temprature=0.7"),
])
def test_wrong_argument_types_to_model_chat(small_model, cache, monkeypatch, kw, message):
    monkeypatch.setenv(CACHE_ENV, cache[CACHE_ENV])
    kw = {"messages": [{"role": "user", "content": "hi"}], **kw}
    with pytest.raises(ValueError, match=message):
        small_model.chat(kw.pop("messages"), max_new_tokens=2, **kw)


def test_api_names_the_tokenizer_mismatch_like_the_cli(small_model, cache, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, cache[CACHE_ENV])
    with pytest.raises(ValueError, match="the tokenizer has 151669 ids but the model's embedding only 256 rows"):
        small_model.chat([{"role": "user", "content": "hi"}], max_new_tokens=2)


def test_convert_refuses_a_bad_nested_value_before_writing(tmp_path):
    # A complete checkpoint whose only fault is a string in rope_scaling: it used to convert
    # (exit 0, output written) and fail with a raw TypeError on the first forward pass.
    from qwen3_jax.testing import write_hf_checkpoint

    src = tmp_path / "src"
    write_hf_checkpoint(src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": "128"}
    (src / "config.json").write_text(json.dumps(cfg))
    before = sorted(os.listdir(src))
    _cli_fails(run_cli("convert", str(src), str(tmp_path / "out"), "--quiet"), "convert",
               str(src / "config.json"), "rope_scaling original_max_position_embeddings='128' must be an integer")
    assert sorted(os.listdir(tmp_path)) == ["src"] and sorted(os.listdir(src)) == before
