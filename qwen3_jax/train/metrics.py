"""Training metrics: JSONL and TensorBoard, throughput and MFU, MoE router load, and the NaN guard.

`RUN_DIR/metrics.jsonl` gets one JSON object per logged step with at least `step`, `loss`,
`learning_rate`, `grad_norm` and `tokens_per_second` (plus `mfu`, `total_loss`, and for MoE
models the balance loss and router load statistics); TensorBoard event files go to `RUN_DIR/tb`
through tensorboardX. On resume, lines logged after the checkpoint being resumed are dropped, so
the file reads as one uninterrupted run.

MFU counts model FLOPs the way PaLM (arXiv 2204.02311, App. B) does: 6 × (matmul params active per
token, LM head included, embedding lookup excluded) + 12 × layers × heads × head_dim × seq_len
per token (attention scores and values, forward and backward, without causal savings).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qwen3_jax.config import Qwen3Config

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or Inf: the run stops without saving."""


def flops_per_token(cfg: Qwen3Config, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) of `cfg` at `seq_len` (PaLM's convention)."""
    from qwen3_jax.model.params import param_count

    _, active = param_count(cfg)
    matmul = active - cfg.vocab_size * cfg.hidden_size  # the embedding lookup is not a matmul
    if cfg.tie_word_embeddings:
        matmul += cfg.vocab_size * cfg.hidden_size  # ... but the tied head is
    attn = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq_len
    return 6.0 * matmul + attn


def measure_matmul_peak(dtype=jnp.float32, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a jitted n×n matmul on the default device (best of `repeats`)."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


def total_peak(per_device: float) -> float:
    """The peak of all devices of the run; CPU "devices" of one host share its cores."""
    devices = jax.devices()
    if devices[0].platform == "cpu":
        return per_device * jax.process_count()
    return per_device * len(devices)


def router_summary(counts: np.ndarray) -> dict[str, float]:
    """Scalars from the step's expert selection counts [L_moe, E] (summed over the global batch)."""
    counts = np.asarray(counts, np.float64)
    E = counts.shape[-1]
    share = counts / np.maximum(counts.sum(-1, keepdims=True), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(share > 0, share * np.log(share), 0.0).sum(-1) / np.log(E)
    return {"router/load_max": float((E * share.max(-1)).max()), "router/load_min": float((E * share.min(-1)).min()),
            "router/load_entropy": float(ent.mean()), "router/idle_experts": float((counts == 0).sum(-1).mean())}


def check_finite(step: int, metrics: dict[str, Any]) -> None:
    """Raises NonFiniteLoss naming the step when the loss (or total loss) is NaN or Inf."""
    for k in ("loss", "total_loss"):
        if k in metrics and not np.isfinite(float(metrics[k])):
            raise NonFiniteLoss(f"step {step}: {k} is {float(metrics[k])}; stopping (no checkpoint written "
                                f"after the last good one; lower optimizer.lr or check the data)")


def scalar_metrics(step: int, raw: dict[str, Any]) -> dict[str, float]:
    """The step's device metrics as plain floats (MoE counts summarised)."""
    out: dict[str, float] = {"step": int(step)}
    for k, v in raw.items():
        if k == "expert_counts":
            out.update(router_summary(v))
        else:
            out[k] = float(np.asarray(v))
    return out


class MetricsWriter:
    """Appends metrics to RUN_DIR/metrics.jsonl and TensorBoard (only in process 0).

    Args:
      run_dir: the run directory.
      tensorboard: also write event files.
      resume_step: drop lines with step > resume_step left by an interrupted run (None = new run).
    """

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = True, resume_step: int | None = None):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(os.fspath(run_dir), METRICS_FILE)
        self._tb = None
        if not self.enabled:
            return
        if os.path.exists(self.path):
            keep = []
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a kill
                    if resume_step is not None and rec.get("step", 0) <= resume_step:
                        keep.append(json.dumps(rec) + "\n")
            with open(self.path + ".tmp", "w", encoding="utf-8") as f:
                f.writelines(keep)
            os.replace(self.path + ".tmp", self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(os.fspath(run_dir), TB_DIR))

    def write(self, record: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            step = int(record["step"])
            for k, v in record.items():
                if k != "step":
                    self._tb.add_scalar(k if "/" in k else f"train/{k}", v, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of RUN_DIR/metrics.jsonl."""
    with open(os.path.join(os.fspath(run_dir), METRICS_FILE), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
