"""The sparse MoE block of Qwen3: router + 128 fine-grained SwiGLU experts, no shared expert.

The router is a bias-free projection to E logits (in the activation dtype, as in the reference);
routing itself (softmax in float32 over all experts, top-k, optional renormalisation) and the
sorted grouped matmul live in `ops/moe.py`. The block returns its router logits too: the
load-balancing loss needs them.

Under a mesh with an `expert` axis of size > 1 (the context mesh of `mesh_context`), the expert
computation runs expert-parallel (`ops/expert_parallel.py`: experts split over `expert`, tokens
exchanged with all-to-all); under a mesh that only splits tokens (data, fsdp, sequence) or the
expert MLP dim (tensor), each device routes its own tokens (`ops/moe_sharded.py`); otherwise the
single-device path runs. Only the expert-parallel path
has a capacity (`capacity_factor`, None = dropless); it reports the token copies it dropped by
sowing `dropped_copies` and `routed_copies` (int32 scalars) into the "intermediates" collection,
read them with `router_metrics.collect_drops` after `apply(..., mutable=["intermediates"])`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3_jax.config import Qwen3Config
from qwen3_jax.model.layers import Einsum, default_init
from qwen3_jax.ops import expert_parallel as ep_ops
from qwen3_jax.ops import moe as moe_ops
from qwen3_jax.ops import moe_sharded as sharded_ops


class MoE(nn.Module):
    """Sparse mixture-of-experts feed-forward block.

    Attributes:
      cfg: the model config (num_experts, num_experts_per_tok, moe_intermediate_size, norm_topk_prob).
      dtype, param_dtype: compute and storage dtypes.
      impl: expert computation, see `ops.moe.IMPLS`.
      capacity_factor: expert-parallel only: rows per destination device as a multiple of the
        balanced load (None = dropless).
      dispatch: expert-parallel token exchange, see `ops.expert_parallel.DISPATCHES`.
    """

    cfg: Qwen3Config
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    impl: str = "auto"
    capacity_factor: float | None = None
    dispatch: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [B, T, D] -> (output [B, T, D], router logits [B, T, E])."""
        c = self.cfg
        B, T, D = x.shape
        E, F = c.num_experts, c.moe_intermediate_size
        router_logits = Einsum((D, E), ("embed", "router"), "BTD,DE->BTE", name="gate",
                               dtype=self.dtype, param_dtype=self.param_dtype)(x)

        wg, wu, wd = _Experts(E, D, F, self.param_dtype, name="experts")()
        xt = x.reshape(B * T, D).astype(self.dtype)
        wg, wu, wd = wg.astype(self.dtype), wu.astype(self.dtype), wd.astype(self.dtype)
        if ep_ops.expert_axis_size() > 1:
            y, dropped = ep_ops.expert_parallel_moe(
                xt, router_logits.reshape(B * T, E), wg, wu, wd, top_k=c.num_experts_per_tok,
                norm_topk_prob=c.norm_topk_prob, capacity_factor=self.capacity_factor, impl=self.impl,
                dispatch=self.dispatch)
            self.sow("intermediates", "dropped_copies", dropped, reduce_fn=lambda _, v: v)
            self.sow("intermediates", "routed_copies", jnp.int32(B * T * c.num_experts_per_tok),
                     reduce_fn=lambda _, v: v)
            return y.reshape(B, T, D), router_logits
        if sharded_ops.needs_sharded_moe():
            y = sharded_ops.sharded_moe(xt, router_logits.reshape(B * T, E), wg, wu, wd,
                                        top_k=c.num_experts_per_tok, norm_topk_prob=c.norm_topk_prob,
                                        impl=self.impl)
            return y.reshape(B, T, D), router_logits
        weights, ids = moe_ops.route(router_logits.reshape(B * T, E), c.num_experts_per_tok,
                                     c.norm_topk_prob, self.dtype)
        y = moe_ops.sparse_moe(xt, weights, ids, wg, wu, wd, impl=self.impl)
        return y.reshape(B, T, D), router_logits


class _Experts(nn.Module):
    """Holds the stacked expert weights: gate_proj/up_proj [E, D, F], down_proj [E, F, D]."""

    num_experts: int
    hidden_size: int
    intermediate_size: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self):
        E, D, F = self.num_experts, self.hidden_size, self.intermediate_size

        def p(name, shape, axes):
            return self.param(name, nn.with_logical_partitioning(default_init, axes), shape, self.param_dtype)

        return (p("gate_proj", (E, D, F), ("expert", "embed", "moe_mlp")),
                p("up_proj", (E, D, F), ("expert", "embed", "moe_mlp")),
                p("down_proj", (E, F, D), ("expert", "moe_mlp", "embed")))
