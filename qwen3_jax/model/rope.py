"""Rotary position embeddings: rotate-half (NeoX) convention, default / linear / YaRN frequencies.

Pairs are (i, i + H/2), not (2i, 2i + 1). Frequencies, angles, cos and sin are computed in float32
and cast to the activation dtype afterwards, as the reference does; YaRN's attention factor
multiplies both cos and sin (so q·k logits scale by its square).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from qwen3_jax.config import Qwen3Config


def _default_inv_freq(dim: int, base: float) -> np.ndarray:
    return 1.0 / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))


def _yarn(dim: int, base: float, factor: float, orig: int, beta_fast: float, beta_slow: float):
    def correction_dim(rotations):
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extrapolate = 1.0 - ramp  # 1: keep the original frequency (high-frequency dims)
    pos_freqs = np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    inv_extra, inv_inter = 1.0 / pos_freqs, 1.0 / (np.float32(factor) * pos_freqs)
    return (inv_inter * (1 - extrapolate) + inv_extra * extrapolate).astype(np.float32)


def rope_frequencies(cfg: Qwen3Config) -> tuple[np.ndarray, float]:
    """Inverse frequencies [H/2] (float32) and the attention factor that scales cos and sin."""
    dim, base, rs = cfg.head_dim, cfg.rope_theta, cfg.rope_scaling
    if rs is None:
        return _default_inv_freq(dim, base), 1.0
    if rs.rope_type == "linear":
        return (_default_inv_freq(dim, base) / np.float32(rs.factor)).astype(np.float32), 1.0
    orig = rs.original_max_position_embeddings or cfg.max_position_embeddings
    factor = rs.factor
    inv = _yarn(dim, base, factor, orig, rs.beta_fast, rs.beta_slow)
    att = rs.attention_factor
    if att is None:
        att = 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0
    return inv, float(att)


def rope_cos_sin(positions: jax.Array, inv_freq: np.ndarray, attention_factor: float, dtype):
    """cos, sin of shape [B, T, H] for integer `positions` [B, T]."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]  # [B, T, H/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # [B, T, H]
    return (jnp.cos(emb) * attention_factor).astype(dtype), (jnp.sin(emb) * attention_factor).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates x [B, T, heads, H] by cos/sin [B, T, H] (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]
