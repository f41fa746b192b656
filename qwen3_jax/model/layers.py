"""Small building blocks: RMSNorm, a logically-partitioned einsum projection, the embedding.

Parameter names mirror the Hugging Face checkpoint (`kernel` for projections, `scale` for norms,
`embedding` for the token table) so that the name table in `checkpoint/hf_mapping.py` holds only
transposes and reshapes.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype
# Hugging Face initialises every linear layer and the embedding with N(0, 0.02).
default_init = nn.initializers.normal(stddev=0.02)


class RMSNorm(nn.Module):
    """RMSNorm over the last axis, computed in float32.

    As in the reference, the normalised value is cast back to the input dtype *before* it is
    multiplied by the weight; doing the multiply in float32 would differ in bfloat16.

    Attributes:
      eps: added to the mean square.
      axis_name: logical name of the normalised axis (for the weight's partitioning).
      param_dtype: dtype of the weight.
    """

    eps: float = 1e-6
    axis_name: str = "norm"
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return scale.astype(x.dtype) * normed.astype(x.dtype)


class Einsum(nn.Module):
    """A bias-free projection `einsum(eq, x, kernel)` with a logically-named kernel.

    Attributes:
      shape: kernel shape, e.g. (D, N, H) for the query projection.
      axes: logical name of each kernel axis.
      eq: einsum equation in the repo's axis alphabet, e.g. "BTD,DNH->BTNH".
      dtype: compute dtype (inputs and kernel are cast to it).
      param_dtype: storage dtype of the kernel.
    """

    shape: Sequence[int]
    axes: Sequence[str | None]
    eq: str
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.with_logical_partitioning(default_init, tuple(self.axes)),
                            tuple(self.shape), self.param_dtype)
        return jnp.einsum(self.eq, x.astype(self.dtype), kernel.astype(self.dtype))


class Embed(nn.Module):
    """Token embedding [V, D]; `attend` reuses it as the tied LM head.

    Attributes:
      vocab_size: V (151,936 for Qwen3: rows past the tokenizer's 151,669 are padding).
      features: D.
    """

    vocab_size: int
    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        self.embedding = self.param("embedding", nn.with_logical_partitioning(default_init, ("vocab", "embed")),
                                    (self.vocab_size, self.features), self.param_dtype)

    def __call__(self, ids: jax.Array) -> jax.Array:
        # The table's `embed` dim is gathered first (as FSDP gathers every weight before use): a
        # lookup into a table split over D gives rows split over D, which the partitioner cannot
        # turn into rows split over the batch without replicating the whole [B, T, D] lookup
        # (XLA's "involuntary full rematerialization") on every device.
        table = nn.with_logical_constraint(self.embedding, ("vocab", None))
        return jnp.take(table, ids, axis=0).astype(self.dtype)  # [B, T, D]

    def attend(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("BTD,VD->BTV", x.astype(self.dtype), self.embedding.astype(self.dtype))
