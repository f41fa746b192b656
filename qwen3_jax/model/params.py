"""Creating and describing parameter trees.

Params are plain nested dicts of arrays (no Flax boxes). Their shapes come from an abstract init
(`jax.eval_shape`, nothing allocated); placing them on a mesh is `sharding.placement`'s job.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from qwen3_jax.config import Qwen3Config
from qwen3_jax.model.transformer import DUMMY_IDS, Qwen3, abstract_variables
from qwen3_jax.sharding.placement import mesh_context, param_shardings
from qwen3_jax.sharding.rules import RULES


def abstract_params(cfg: Qwen3Config, param_dtype=jnp.float32):
    """The param tree as ShapeDtypeStructs (nothing allocated)."""
    return nn.unbox(abstract_variables(cfg, param_dtype))


def param_count(cfg: Qwen3Config) -> tuple[int, int]:
    """(total, active per token) parameter counts, from abstract shapes.

    Active counts only `num_experts_per_tok` of each MoE layer's experts (the router and everything
    else always run).
    """
    leaves = jax.tree_util.tree_leaves_with_path(abstract_params(cfg))
    total = sum(math.prod(x.shape) for _, x in leaves)
    inactive = 0
    if cfg.is_moe:
        for path, x in leaves:
            if any(getattr(k, "key", None) == "experts" for k in path):
                inactive += math.prod(x.shape) // cfg.num_experts * (cfg.num_experts - cfg.num_experts_per_tok)
    return total, total - inactive


def init_params(cfg: Qwen3Config, seed: int = 0, param_dtype: Any = jnp.float32, mesh: Mesh | None = None,
                rules=RULES):
    """Random params (N(0, 0.02) projections, unit norms), created directly in their sharding."""
    model = Qwen3(cfg, param_dtype=param_dtype, dtype=param_dtype)

    def init(key):
        return nn.unbox(model.init(key, DUMMY_IDS)["params"])

    if mesh is None:
        return jax.jit(init)(jax.random.key(seed))
    with mesh_context(cfg, mesh, rules):
        return jax.jit(init, out_shardings=param_shardings(cfg, mesh, rules))(jax.random.key(seed))
