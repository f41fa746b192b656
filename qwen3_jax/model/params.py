"""Creating, describing and placing parameter trees.

Params are plain nested dicts of arrays (no Flax boxes). Their logical axis names come from an
abstract init (`jax.eval_shape`, nothing allocated), and one rules table turns them into
`NamedSharding`s on a mesh.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from qwen3_jax.config import Qwen3Config
from qwen3_jax.model.transformer import Qwen3
from qwen3_jax.sharding.rules import RULES, rules_for_mesh

# NumPy, not jnp: creating a JAX array at import would start the backends (and fix the device count).
_DUMMY = np.zeros((1, 1), np.int32)


def abstract_variables(cfg: Qwen3Config, param_dtype=jnp.float32):
    """Boxed abstract params (ShapeDtypeStructs inside LogicallyPartitioned) from `jax.eval_shape`."""
    model = Qwen3(cfg, param_dtype=param_dtype, dtype=param_dtype)
    return jax.eval_shape(model.init, jax.random.key(0), _DUMMY)["params"]


def abstract_params(cfg: Qwen3Config, param_dtype=jnp.float32):
    """The param tree as ShapeDtypeStructs (nothing allocated)."""
    return nn.unbox(abstract_variables(cfg, param_dtype))


def logical_axes(cfg: Qwen3Config):
    """The param tree with a PartitionSpec of *logical* axis names at every leaf."""
    return nn.get_partition_spec(abstract_variables(cfg))


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


def model_axis_sizes(cfg: Qwen3Config) -> dict[str, int]:
    """Size of each logical model axis (for dropping splits that do not divide it)."""
    n, k = cfg.num_attention_heads, cfg.num_key_value_heads
    sizes = {"vocab": cfg.vocab_size, "act_vocab": cfg.vocab_size, "embed": cfg.hidden_size,
             "heads": n, "act_heads": n, "kv_heads": k, "act_kv_heads": k, "head_dim": cfg.head_dim,
             "mlp": cfg.intermediate_size, "act_mlp": cfg.intermediate_size}
    if cfg.is_moe:
        sizes.update(expert=cfg.num_experts, moe_mlp=cfg.moe_intermediate_size)
    return sizes


def mesh_rules(cfg: Qwen3Config, mesh: Mesh | None, rules=RULES):
    """The rules table restricted to `mesh` and to the splits `cfg`'s sizes allow."""
    return rules_for_mesh(mesh, rules, sizes=model_axis_sizes(cfg))


def param_shardings(cfg: Qwen3Config, mesh: Mesh, rules=RULES):
    """NamedSharding for every param on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_axes(cfg), mesh, mesh_rules(cfg, mesh, rules))


def shard_params(params, cfg: Qwen3Config, mesh: Mesh, rules=RULES):
    """Places a param tree on `mesh` following the logical rules."""
    return jax.device_put(params, param_shardings(cfg, mesh, rules))


@contextlib.contextmanager
def mesh_context(cfg: Qwen3Config, mesh: Mesh | None, rules=RULES):
    """Enters `jax.set_mesh(mesh)` and the logical rules, so activation constraints take effect.

    Enter it around the *call* of a jitted function (set_mesh refuses to run inside a trace).
    """
    if mesh is None:
        yield
        return
    with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_rules(cfg, mesh, rules)):
        yield


def init_params(cfg: Qwen3Config, seed: int = 0, param_dtype: Any = jnp.float32, mesh: Mesh | None = None,
                rules=RULES):
    """Random params (N(0, 0.02) projections, unit norms), created directly in their sharding."""
    model = Qwen3(cfg, param_dtype=param_dtype, dtype=param_dtype)

    def init(key):
        return nn.unbox(model.init(key, _DUMMY)["params"])

    if mesh is None:
        return jax.jit(init)(jax.random.key(seed))
    with mesh_context(cfg, mesh, rules):
        return jax.jit(init, out_shardings=param_shardings(cfg, mesh, rules))(jax.random.key(seed))
