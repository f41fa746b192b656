"""`qwen3-jax generate` and `qwen3-jax chat` end to end, and their errors on bad arguments."""

import json
import os
import subprocess
import sys

import pytest

from qwen3_jax.cli.main import main

CLI = [sys.executable, "-c", "import sys; from qwen3_jax.cli.main import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from qwen3_jax.testing import write_hf_checkpoint
    from qwen3_jax.text.tokenizer import Tokenizer

    path = tmp_path_factory.mktemp("cli_ckpt")
    write_hf_checkpoint(path, "dense", vocab_size=151_936, tie_word_embeddings=True, num_hidden_layers=2)
    Tokenizer.qwen3().save(path)
    return str(path)


def _run(*args, stdin=None):
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    return subprocess.run(CLI + list(args), capture_output=True, text=True, input=stdin, env=env, timeout=300)


def test_generate_json(checkpoint):
    r = _run("generate", "--model", checkpoint, "--prompt", "Hello there", "--json", "--max-new-tokens", "8",
             "--no-think", "--seed", "4")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"reasoning", "content", "tool_calls", "usage", "finish_reason"}
    assert out["thinking"] is False
    assert out["sampling"]["temperature"] == 0.7 and out["sampling"]["top_p"] == 0.8 and out["sampling"]["seed"] == 4
    u = out["usage"]
    # <|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n
    from qwen3_jax.text.tokenizer import Tokenizer
    tok = Tokenizer.from_pretrained(checkpoint)
    expected = tok.apply_chat_template([{"role": "user", "content": "Hello there"}], add_generation_prompt=True,
                                       enable_thinking=False, tokenize=True)
    assert u["prompt_tokens"] == len(expected)
    assert 1 <= u["completion_tokens"] <= 8
    assert u["reasoning_tokens"] + u["content_tokens"] == u["completion_tokens"]


def test_chat_reads_turns_from_stdin(checkpoint):
    r = _run("chat", "--model", checkpoint, "--max-new-tokens", "6", stdin="Hi\n/no_think\nHi again\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" content tokens, ") == 2  # one status line per reply
    assert "[non-thinking mode]" in r.stdout and "non-thinking (T=0.7 top_p=0.8 top_k=20" in r.stdout


def test_bad_argument_is_one_line_without_traceback():
    r = _run("generate", "--model", "tiny-dense", "--prompt", "hi", "--top-p", "1.5")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "top_p" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-1"], "temperature"),
    (["--top-k", "-3"], "top_k"),
    (["--min-p", "2"], "min_p"),
    (["--max-new-tokens", "0"], "max-new-tokens"),
    (["--thinking-budget", "-1"], "thinking-budget"),
])
def test_bad_values(args, message, capsys):
    assert main(["generate", "--model", "tiny-dense", "--prompt", "hi", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unknown_model(capsys):
    assert main(["generate", "--model", "/no/such/dir", "--prompt", "hi"]) == 2
    assert "neither a checkpoint directory nor a preset" in capsys.readouterr().err


def test_prompt_too_long(capsys):
    assert main(["generate", "--model", "tiny-dense", "--prompt", "word " * 5000, "--max-new-tokens", "4"]) == 2
    err = capsys.readouterr().err
    assert "too many" in err and "context" in err


def test_demo_runs_non_interactively():
    """`make demo` runs the shipped arithmetic model: its four scripted turns, then exits (stdin closed)."""
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "qwen3_jax.demo", "--max-new-tokens", "6", "--seed", "1"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "trained by this project's own" in r.stdout
    assert r.stdout.count("[answer]") == 4 and r.stdout.count(">>> What is") == 4
    assert "/no_think: answers at once" in r.stdout and "thinking budget of 16 tokens" in r.stdout
    assert "Traceback" not in r.stderr