"""The programs the plan compiles, with abstract, sharded inputs (nothing is allocated).

Serving compiles the engine's own jitted prefill and decode loop (`generate.engine.Engine`), built
over a `Model` whose params are `jax.ShapeDtypeStruct`s placed by the project's rules on the
slice's mesh. Training compiles the trainer's step (see `train_program`).

Each builder returns a list of `Program`s: a name, the jitted function, its abstract arguments and
the static ones, plus which arguments are params / optimizer state / KV cache (for the memory split).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from qwen3_jax.config import Qwen3Config
from qwen3_jax.model.params import abstract_params
from qwen3_jax.sharding.placement import mesh_context, param_shardings


@dataclasses.dataclass
class Program:
    """One jitted function to lower and compile.

    Attributes:
      name: "train_step", "prefill" or "decode".
      fn: the jitted function (`jax.jit` object) as the trainer / engine calls it.
      args: positional arguments: `jax.ShapeDtypeStruct` trees with shardings, or static values.
      parts: {"params" | "optimizer_state" | "kv_cache": abstract subtree} counted per chip.
      mesh, config: entered with `mesh_context` around lowering, as the trainer and engine do.
    """

    name: str
    fn: Callable
    args: tuple
    parts: dict[str, Any]
    mesh: Any
    config: Qwen3Config

    def lower(self):
        with mesh_context(self.config, self.mesh):
            return self.fn.lower(*self.args)


def sharded_abstract_params(cfg: Qwen3Config, mesh, dtype) -> dict:
    """The param tree as ShapeDtypeStructs of `dtype`, with the project's shardings on `mesh`."""
    shardings = param_shardings(cfg, mesh)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, dtype, sharding=s), abstract_params(cfg), shardings)


def _replicated(mesh, shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, P()))


def _with_shardings(info, shardings):
    return jax.tree.map(lambda o, s: jax.ShapeDtypeStruct(o.shape, o.dtype, sharding=s), info, shardings)


def serve_programs(cfg: Qwen3Config, mesh, batch: int, seq: int, new_tokens: int = 512,
                   dtype=jnp.bfloat16, attention_impl: str = "auto") -> list[Program]:
    """The engine's prefill of `batch` prompts of `seq` tokens and its decode loop over the cache.

    `attention_impl` is the model's (`model.attention_impl`; "flash" compiles the Pallas kernels).

    The rows and lengths are rounded as `Engine.start` rounds them (batch to a multiple of the
    batch-sharding axes, cache and output lengths to buckets), so the programs are the ones a
    generate call of that shape compiles.
    """
    from qwen3_jax.api import Model
    from qwen3_jax.generate import loop
    from qwen3_jax.generate.engine import Engine, bucket, default_stop_tokens
    from qwen3_jax.generate.sampling import GREEDY

    params = sharded_abstract_params(cfg, mesh, dtype)
    model = Model(cfg, params, dtype=dtype, param_dtype=dtype, mesh=mesh, attention_impl=attention_impl)
    engine = Engine(model)
    mult = engine._batch_multiple()
    B = -(-bucket(batch, 1) // mult) * mult
    T = bucket(seq)
    if T + 1 > engine.max_cache_length:
        raise ValueError(f"seq={seq} (bucket {T}) leaves no room for a new token in the model's context of "
                         f"{engine.max_cache_length} tokens")
    max_new = min(new_tokens, engine.max_cache_length - T)
    cache_len, out_len = bucket(T + max_new), bucket(max_new)
    spec = loop.LoopSpec(sampling=GREEDY.static(), limit=cfg.vocab_size, stop_tokens=default_stop_tokens(cfg))
    key = jax.eval_shape(lambda: jax.random.key(0))
    rep = NamedSharding(mesh, P())
    prefill_args = (spec, cache_len, out_len, engine.params, _replicated(mesh, (B, T), jnp.int32),
                    _replicated(mesh, (B,), jnp.int32), _replicated(mesh, (B,), jnp.bool_),
                    _replicated(mesh, (B,), jnp.bool_), jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=rep),
                    _replicated(mesh, (), jnp.int32), _replicated(mesh, (), jnp.int32))
    prefill = Program("prefill", engine._prefill, prefill_args, {"params": params}, mesh, cfg)
    # The decode loop's state is what the prefill returns, placed where the compiled prefill puts it
    # (the compiled prefill is kept for `compile.measure`). A prefill that does not compile (out of
    # memory) leaves the cache placed by the rules, the rest replicated.
    t0 = time.perf_counter()
    lowered = prefill.lower()
    try:
        prefill.compiled = lowered.compile()
        out_shardings = prefill.compiled.output_shardings
    except Exception as e:  # judged by `compile.measure`, which compiles it again
        prefill.compile_error = e
        out_shardings = _state_shardings(cfg, mesh, lowered.out_info)
    prefill.compile_seconds = time.perf_counter() - t0
    state = _with_shardings(lowered.out_info, out_shardings)
    decode_args = (spec, engine.params, state, _replicated(mesh, (), jnp.int32))
    decode = Program("decode", engine._decode, decode_args, {"params": params, "kv_cache": state["cache"]}, mesh, cfg)
    prefill.parts["kv_cache_out"] = state["cache"]
    prefill.lowered = lowered
    return [prefill, decode]


def _state_shardings(cfg, mesh, info):
    from flax import linen as nn

    from qwen3_jax.generate.forward import CACHE_AXES
    from qwen3_jax.sharding.placement import mesh_rules

    rules = mesh_rules(cfg, mesh)
    rep = NamedSharding(mesh, P())
    shard = {k: NamedSharding(mesh, nn.logical_to_mesh_axes(("layers",) + axes, rules)) for k, axes in CACHE_AXES.items()}
    out = jax.tree.map(lambda _: rep, info)
    out["cache"] = jax.tree_util.tree_map_with_path(lambda path, _: shard[path[-1].key], info["cache"])
    return out


def train_program(cfg: Qwen3Config, mesh, batch: int, seq: int, remat: str = "full",
                  microbatches: int = 1, capacity_factor: float | None = None,
                  attention_impl: str = "auto") -> list[Program]:
    """The trainer's step (forward, backward, optimizer update) over `batch` rows of `seq` tokens.

    It is the step `qwen3-jax train` runs: `qwen3_jax.train.step.build_train_step` with bfloat16
    compute, float32 master weights, the given remat policy, `microbatches` gradient-accumulation
    micro-batches, the MoE expert-parallel `capacity_factor` (None: dropless) and the attention
    implementation (`model.attention_impl`; "auto" is the Pallas flash kernel on TPU, ring attention
    on meshes with a `sequence` axis), lowered on the abstract state and batch it describes.
    """
    from qwen3_jax.train.config import config_from_dict
    from qwen3_jax.train.step import build_train_step

    run = config_from_dict({"model": {"dtype": "bfloat16", "param_dtype": "float32", "remat": remat,
                                      "moe_capacity_factor": capacity_factor,
                                      "attention_impl": attention_impl},
                            "train": {"batch_size": batch, "seq_len": seq, "grad_accum": microbatches}})
    ts = build_train_step(run, mesh, model_config=cfg)  # outside the mesh: it makes a concrete key on the host
    state, tokens = ts.abstract_state(), ts.abstract_batch()
    return [Program("train_step", ts.jitted, (state, tokens),
                    {"params": state["params"], "optimizer_state": state["opt_state"]}, mesh, cfg)]
