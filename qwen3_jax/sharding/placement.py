"""Placing parameter trees and computations on a mesh.

Params carry logical axis names (from an abstract init, nothing allocated); the one rules table of
`sharding.rules`, restricted to the mesh and to the splits the model's sizes allow, turns them into
`NamedSharding`s. `mesh_context` enters the same rules for the activation constraints.
"""

from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
from jax.sharding import Mesh

from qwen3_jax.config import Qwen3Config
from qwen3_jax.model.transformer import abstract_variables
from qwen3_jax.sharding.rules import RULES, rules_for_mesh


def logical_axes(cfg: Qwen3Config):
    """The param tree with a PartitionSpec of *logical* axis names at every leaf."""
    return nn.get_partition_spec(abstract_variables(cfg))


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
