"""Helpers for tests and benchmarks: small random Hugging Face checkpoints written by transformers.

These need `torch` and `transformers` (the `test` extra). Weights are drawn with a larger std than
the HF init (0.02) so that every layer visibly changes the logits and routing is not uniform.
"""

from __future__ import annotations

import os
from typing import Any

SMALL_DENSE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
                   rope_theta=1_000_000.0, rms_norm_eps=1e-6)
SMALL_MOE = dict(SMALL_DENSE, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                 norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[])


def hf_model(kind: str = "dense", seed: int = 0, std: float = 0.1, **overrides: Any):
    """A random transformers Qwen3ForCausalLM / Qwen3MoeForCausalLM (float32, eval mode)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    if kind == "dense":
        model = Qwen3ForCausalLM(Qwen3Config(**{**SMALL_DENSE, **overrides}))
    elif kind == "moe":
        model = Qwen3MoeForCausalLM(Qwen3MoeConfig(**{**SMALL_MOE, **overrides}))
    else:
        raise ValueError(f"kind must be 'dense' or 'moe', got {kind!r}")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
    return model.eval()


def write_hf_checkpoint(path: str | os.PathLike, kind: str = "dense", seed: int = 0, dtype: str = "float32",
                        max_shard_size: str | None = None, **overrides: Any):
    """Writes a random checkpoint with `save_pretrained` (hub layout); returns the torch model."""
    import torch

    model = hf_model(kind, seed, **overrides)
    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(os.fspath(path), **kw)
    return model


def run_cli(*args: str, timeout: float = 300, input: str | None = None, env: dict | None = None):
    """Runs the installed `qwen3-jax` program (next to the running Python) in a subprocess.

    Returns the CompletedProcess (text stdout/stderr). The environment is inherited, so a
    PYTHONPATH pointing at a checkout makes the program run that checkout's code.
    """
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "qwen3-jax")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, input=input,
                          env={**os.environ, **(env or {})})


def interrupt_cli(*args: str, when, timeout: float = 300):
    """Starts `qwen3-jax ARGS`, sends SIGINT once `when(process)` is true; returns (rc, stdout, stderr).

    `when` is polled every few milliseconds with the Popen object; it must become true while the
    program is still running (an AssertionError says so otherwise).
    """
    import signal
    import subprocess
    import sys
    import time

    exe = os.path.join(os.path.dirname(sys.executable), "qwen3-jax")
    p = subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while not when(p):
            if p.poll() is not None or time.time() > deadline:
                what = f"ended (rc {p.returncode})" if p.poll() is not None else f"still running after {timeout} s"
                p.kill()  # a program still running would keep communicate() waiting for ever
                out, err = p.communicate()
                raise AssertionError(f"qwen3-jax {' '.join(args)} {what} before the interrupt point:"
                                     f"\n{err.decode(errors='replace')[-2000:]}")
            time.sleep(0.005)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def kill_cli(*args: str, when, timeout: float = 600, env: dict | None = None) -> str:
    """Starts `qwen3-jax ARGS` and SIGKILLs it as soon as `when()` is true (polled every few ms).

    For kill-and-resume tests: `when` looks at the run directory (e.g. a complete checkpoint). An
    AssertionError says so when the program ends, or `timeout` passes, before `when()` holds.

    Returns:
        What `when()` returned (truthy).
    """
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    exe = os.path.join(os.path.dirname(sys.executable), "qwen3-jax")
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                             env={**os.environ, **(env or {})})
        deadline = time.time() + timeout
        try:
            while True:
                seen = when()
                if seen:
                    p.send_signal(signal.SIGKILL)
                    p.wait()
                    return seen
                if p.poll() is not None or time.time() > deadline:
                    what = f"ended (rc {p.returncode})" if p.poll() is not None else f"still running after {timeout} s"
                    err.seek(0)
                    raise AssertionError(f"qwen3-jax {' '.join(args)} {what} before the kill point:"
                                         f"\n{err.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.005)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
