"""The dense SwiGLU MLP: down(silu(gate(x)) * up(x))."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3_jax.model.layers import Einsum


class MLP(nn.Module):
    """SwiGLU feed-forward block.

    Attributes:
      hidden_size: D.
      intermediate_size: F.
      dtype, param_dtype: compute and storage dtypes.
    """

    hidden_size: int
    intermediate_size: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        D, F = self.hidden_size, self.intermediate_size
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        gate = Einsum((D, F), ("embed", "mlp"), "BTD,DF->BTF", name="gate_proj", **kw)(x)
        up = Einsum((D, F), ("embed", "mlp"), "BTD,DF->BTF", name="up_proj", **kw)(x)
        h = nn.with_logical_constraint(jax.nn.silu(gate) * up, ("batch", "length", "act_mlp"))
        return Einsum((F, D), ("mlp", "embed"), "BTF,FD->BTD", name="down_proj", **kw)(h)
