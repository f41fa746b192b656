"""Backward pass of flash attention.

INTERIM: the gradients are computed by differentiating `attention_reference` (plain XLA, memory
T·S). The Pallas dq and dk/dv kernels replace this next.
"""

from __future__ import annotations

import jax

from qwen3_jax.ops.attention_reference import attention_reference


def backward(st, q, k, v, q_pos, kv_pos, q_seg, kv_seg, out, lse, d_out, d_lse):
    """(dq, dk, dv) for cotangents d_out [B, T, N, H] and d_lse [B, T, N]."""
    def f(q, k, v):
        return attention_reference(q, k, v, segment_ids=q_seg, kv_segment_ids=kv_seg, q_positions=q_pos,
                                   kv_positions=kv_pos, causal=st.causal, scale=st.scale, return_lse=True)

    _, vjp = jax.vjp(f, q, k, v)
    return vjp((d_out, d_lse))
