"""The programs the plan compiles, with abstract, sharded inputs (nothing is allocated).

Serving compiles the engine's own jitted prefill and decode loop (`generate.engine.Engine`), built
over a `Model` whose params are `jax.ShapeDtypeStruct`s placed by the project's rules on the
slice's mesh. Training compiles the trainer's step (see `train_program`).

Each builder returns a list of `Program`s: a name, the jitted function, its abstract arguments and
the static ones, plus which arguments are params / optimizer state / KV cache (for the memory split).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from qwen3_jax.config import Qwen3Config
from qwen3_jax.model.params import abstract_params, mesh_context, param_shardings


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
                   dtype=jnp.bfloat16) -> list[Program]:
    """The engine's prefill of `batch` prompts of `seq` tokens and its decode loop over the cache.

    The rows and lengths are rounded as `Engine.start` rounds them (batch to a multiple of the
    batch-sharding axes, cache and output lengths to buckets), so the programs are the ones a
    generate call of that shape compiles.
    """
    from qwen3_jax.api import Model
    from qwen3_jax.generate import loop
    from qwen3_jax.generate.engine import Engine, bucket, default_stop_tokens
    from qwen3_jax.generate.sampling import GREEDY

    params = sharded_abstract_params(cfg, mesh, dtype)
    model = Model(cfg, params, dtype=dtype, param_dtype=dtype, mesh=mesh)
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
    # The decode loop's state is what the prefill returns, placed where the compiled prefill puts it.
    lowered = prefill.lower()
    state = _with_shardings(lowered.out_info, lowered.compile().output_shardings)
    decode_args = (spec, engine.params, state, _replicated(mesh, (), jnp.int32))
    decode = Program("decode", engine._decode, decode_args, {"params": params, "kv_cache": state["cache"]}, mesh, cfg)
    prefill.parts["kv_cache_out"] = state["cache"]
    prefill._lowered = lowered  # reused by the compile step
    return [prefill, decode]


def train_program(cfg: Qwen3Config, mesh, batch: int, seq: int, remat: str = "full",
                  microbatches: int = 1) -> list[Program]:
    """The trainer's step (forward, backward, optimizer update) over `batch` rows of `seq` tokens.

    It is the step `qwen3-jax train` runs: `qwen3_jax.train.step.build_train_step` with bfloat16
    compute, float32 master weights, the given remat policy and `microbatches` gradient-accumulation
    micro-batches, lowered on the abstract state and batch it describes.

    ADAPTER POINT (issue 12): until the trainer is on main, `_provisional_train_step` stands in for
    it (the same recipe, written here); it goes away when `qwen3_jax.train.step` lands.
    """
    try:
        from qwen3_jax.train.config import config_from_dict
        from qwen3_jax.train.step import build_train_step
    except ImportError:
        return [_provisional_train_step(cfg, mesh, batch, seq, remat, microbatches)]
    run = config_from_dict({"model": {"dtype": "bfloat16", "param_dtype": "float32", "remat": remat},
                            "train": {"batch_size": batch, "seq_len": seq, "grad_accum": microbatches}})
    with mesh_context(cfg, mesh):
        ts = build_train_step(run, mesh, model_config=cfg)
    state, tokens = ts.abstract_state(), ts.abstract_batch()
    return [Program("train_step", ts.jitted, (state, tokens),
                    {"params": state["params"], "optimizer_state": state["opt_state"]}, mesh, cfg)]


def batch_axes(mesh) -> tuple[str, ...]:
    """Mesh axes the batch dimension is split over (the rules' "batch" entry)."""
    return tuple(a for a in ("data", "fsdp", "expert") if a in mesh.axis_names)


def _provisional_train_step(cfg, mesh, batch, seq, remat, microbatches) -> Program:
    import optax

    from qwen3_jax.losses import load_balancing_loss
    from qwen3_jax.model.transformer import Qwen3

    if batch % microbatches:
        raise ValueError(f"batch={batch} is not divisible by microbatches={microbatches}")
    module = Qwen3(cfg, dtype=jnp.bfloat16, param_dtype=jnp.float32, remat=remat)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(3e-4, b1=0.9, b2=0.95, weight_decay=0.1))
    params = sharded_abstract_params(cfg, mesh, jnp.float32)
    p_sh = jax.tree.map(lambda a: a.sharding, params)
    opt = jax.eval_shape(tx.init, params)
    rep = NamedSharding(mesh, P())
    opt_sh = optax.tree_utils.tree_map_params(tx, lambda p, s: s, opt, p_sh, transform_non_params=lambda _: rep)
    opt = _with_shardings(opt, opt_sh)
    rows = NamedSharding(mesh, P(batch_axes(mesh) or None))
    tokens = {k: jax.ShapeDtypeStruct((batch, seq), jnp.int32, sharding=rows)
              for k in ("input_ids", "targets", "positions", "segment_ids")}
    mb = batch // microbatches
    mb_rows = NamedSharding(mesh, P(None, batch_axes(mesh) or None))

    def loss_fn(p, b):
        out = module.apply({"params": p}, b["input_ids"], positions=b["positions"], segment_ids=b["segment_ids"])
        ce = optax.softmax_cross_entropy_with_integer_labels(out.logits.astype(jnp.float32), b["targets"])
        real = (b["segment_ids"] > 0).astype(jnp.float32)
        loss = jnp.sum(ce * real) / jnp.maximum(jnp.sum(real), 1.0)
        if out.router_logits is not None:
            loss = loss + cfg.router_aux_loss_coef * load_balancing_loss(out.router_logits, cfg.num_experts_per_tok,
                                                                         real)
        return loss

    def step(state, b):
        def one(acc, sub):
            loss, g = jax.value_and_grad(loss_fn)(state["params"], sub)
            return jax.tree.map(jnp.add, acc, (loss, g)), None

        # Row r goes to micro-batch r % microbatches, so every micro-batch keeps the rows' sharding.
        split = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(
            x.reshape(mb, microbatches, seq).swapaxes(0, 1), mb_rows), b)
        zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state["params"]))
        (loss, grads), _ = jax.lax.scan(one, zero, split)
        grads = jax.tree.map(lambda g: g / microbatches, grads)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new = {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}
        return new, loss / microbatches

    state_sh = {"params": p_sh, "opt_state": opt_sh}
    fn = jax.jit(step, in_shardings=(state_sh, jax.tree.map(lambda t: t.sharding, tokens)),
                 out_shardings=(state_sh, rep), donate_argnums=(0,))
    return Program("train_step", fn, ({"params": params, "opt_state": opt}, tokens),
                   {"params": params, "optimizer_state": opt}, mesh, cfg)
