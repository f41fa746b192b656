"""One jitted training step, sharded over the mesh by the project's logical rules table.

    ts = build_train_step(cfg, mesh)                 # cfg: TrainConfig
    state = ts.init_state(seed)                      # params, opt_state, step, rng (placed on the mesh)
    state, metrics = ts(state, batch)                # batch: global arrays {"tokens","segment_ids","positions"}

The state is a plain dict: float32 master `params` (the model computes in `model.dtype`, casting
each weight at use), the optax `opt_state`, the int32 `step`, and the run's `rng` key (raw uint32
data). `TrainStep.jitted` is the `jax.jit` object with its in/out shardings pinned, so a planner can
lower it on abstract inputs (`ts.lower(ts.abstract_state(), ts.abstract_batch())`) without
allocating anything.

Gradient accumulation splits the global batch into `grad_accum` micro-batches (by stride, so each
runs on every device; see `train.accumulate`), scanned in order; the cross-entropy of every
micro-batch is divided by the token count of the *whole* batch, so the accumulated gradient equals
the one-batch gradient. MoE models add the global-batch load-balancing
loss: expert selections are counted over the whole step's batch (all devices; with accumulation
one extra forward pass counts them first) and each micro-batch adds its exact share
(`qwen3_jax.losses.global_batch_balance_loss`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from qwen3_jax.config import ConfigError, Qwen3Config
from qwen3_jax.losses import RouterStats, global_batch_balance_loss, router_stats
from qwen3_jax.sharding.placement import mesh_context, mesh_rules, param_shardings
from qwen3_jax.sharding.rules import mesh_axis_sizes
from qwen3_jax.model.attention_impl import resolve as resolve_attention
from qwen3_jax.model.transformer import Qwen3
from qwen3_jax.ops.ring_attention import to_zigzag
from qwen3_jax.train import accumulate
from qwen3_jax.train.config import TrainConfig
from qwen3_jax.train.loss import chunked_cross_entropy, head_weight, next_token_targets, router_z_loss_sum
from qwen3_jax.train.optimizer import current_lr, make_optimizer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
BATCH_KEYS = ("tokens", "segment_ids", "positions")
# Optional batch key (SFT): int32 [B, T], 1 where position t's prediction of token t + 1 counts;
# multiplies the next-token weights, so the loss covers only the masked targets.
LOSS_MASK = "loss_mask"


@dataclasses.dataclass
class TrainStep:
    """The jitted step and everything needed to feed it.

    Attributes:
      jitted: `jax.jit(step, in_shardings, out_shardings, donate_argnums=0)`; call it inside
        `mesh_context` (or use `__call__`).
      state_shardings: NamedSharding tree of the state.
      batch_shardings: NamedSharding of each batch array ([B, T], batch over the data axes).
      mesh, model_config, config, module, optimizer: what it was built from.
      batch_keys: the batch arrays the step reads (`BATCH_KEYS`, plus `LOSS_MASK` for SFT).
    """

    jitted: Any
    state_shardings: Any
    batch_shardings: dict
    mesh: Mesh
    model_config: Qwen3Config
    config: TrainConfig
    module: Qwen3
    optimizer: optax.GradientTransformation
    _init: Callable = None
    _from_params: Callable = None
    batch_keys: tuple = BATCH_KEYS

    def __call__(self, state, batch):
        with mesh_context(self.model_config, self.mesh):
            return self.jitted(state, batch)

    def lower(self, state, batch):
        """Lowers the step for (abstract or concrete) inputs, e.g. to compile for another topology."""
        with mesh_context(self.model_config, self.mesh):
            return self.jitted.lower(state, batch)

    def init_state(self, seed: int | None = None):
        """A fresh state: random params (seed = train.seed), a new optimizer state, step 0."""
        seed = self.config.train.seed if seed is None else seed
        with mesh_context(self.model_config, self.mesh):
            return self._init(jax.random.PRNGKey(seed))

    def state_from_params(self, params, seed: int | None = None):
        """A fresh state around given params (a new stage: `--init-from`); params are cast and placed."""
        seed = self.config.train.seed if seed is None else seed
        with mesh_context(self.model_config, self.mesh):
            return self._from_params(params, jax.random.PRNGKey(seed))

    def abstract_state(self):
        """ShapeDtypeStructs of the state, carrying its shardings (a restore or lowering target)."""
        with mesh_context(self.model_config, self.mesh):
            return jax.eval_shape(self._init, jax.ShapeDtypeStruct((2,), jnp.uint32))

    def abstract_batch(self):
        t = self.config.train
        return {k: jax.ShapeDtypeStruct((t.batch_size, t.seq_len), jnp.int32, sharding=self.batch_shardings[k])
                for k in self.batch_keys}

    def place_batch(self, local: dict) -> dict:
        """Global batch arrays from this process's rows ([batch_size / process_count, seq] each)."""
        out = {}
        for k in self.batch_keys:
            x = np.asarray(local[k], np.int32)
            out[k] = jax.make_array_from_process_local_data(self.batch_shardings[k], x)
        return out


def make_module(cfg: TrainConfig, model_config: Qwen3Config, mesh: Mesh | None = None) -> Qwen3:
    m = cfg.model
    impl, platform = resolve_attention(m.attention_impl, mesh, model_config.dual_chunk_attention_config is not None)
    return Qwen3(model_config, dtype=DTYPES[m.dtype], param_dtype=DTYPES[m.param_dtype], remat=m.remat,
                 moe_impl=m.moe_impl, moe_capacity_factor=m.moe_capacity_factor, attention_impl=impl,
                 ring_layout=m.ring_layout, attention_platform=platform)


def _opt_shardings(tx, abstract_opt_state, p_shardings, mesh):
    replicated = NamedSharding(mesh, P())
    return optax.tree_utils.tree_map_params(tx, lambda _, s: s, abstract_opt_state, p_shardings,
                                            transform_non_params=lambda _: replicated)


def build_train_step(cfg: TrainConfig, mesh: Mesh, model_config: Qwen3Config | None = None,
                     batch_keys: tuple = BATCH_KEYS) -> TrainStep:
    """Builds the sharded, jitted train step of `cfg` on `mesh`.

    Args:
      cfg: the run config (model, train, optimizer sections are used).
      mesh: the device mesh (Auto axes, see `qwen3_jax.make_mesh`).
      model_config: the architecture; default `cfg.model_config()`.
      batch_keys: `BATCH_KEYS`, or with `LOSS_MASK` added: the loss then counts only the
        targets the batch's loss mask marks (SFT on assistant tokens).
    """
    unknown = set(batch_keys) - set(BATCH_KEYS) - {LOSS_MASK}
    if unknown or not set(BATCH_KEYS) <= set(batch_keys):
        raise ValueError(f"batch_keys must be {BATCH_KEYS} plus optionally {LOSS_MASK!r}; got {batch_keys}")
    batch_keys = tuple(batch_keys)
    masked = LOSS_MASK in batch_keys
    mc = model_config or cfg.model_config()
    t = cfg.train
    module = make_module(cfg, mc, mesh)
    # Ring attention in the zig-zag layout: each batch is permuted once (ids, segment ids, positions
    # and the next-token targets computed before), the loss being a sum over tokens in any order.
    n_seq = mesh_axis_sizes(mesh).get("sequence", 1)
    zigzag = module.attention_impl == "ring" and cfg.model.ring_layout == "zigzag" and n_seq > 1
    if zigzag and t.seq_len % (2 * n_seq):
        raise ConfigError(f"train.seq_len={t.seq_len} must be a multiple of 2 x sequence={2 * n_seq} "
                          "for model.ring_layout=zigzag")

    def ring_order(*xs):
        return tuple(to_zigzag(x, n_seq) for x in xs) if zigzag else xs
    tx = make_optimizer(cfg.optimizer, t.steps)
    rules = mesh_rules(mc, mesh)
    p_shardings = param_shardings(mc, mesh)
    replicated = NamedSharding(mesh, P())
    batch_spec = nn.logical_to_mesh_axes(("batch", "length"), rules)
    batch_shardings = {k: NamedSharding(mesh, batch_spec) for k in batch_keys}
    param_dtype = DTYPES[cfg.model.param_dtype]
    A = t.grad_accum
    aux_coef = mc.router_aux_loss_coef if t.aux_loss_coef is None else t.aux_loss_coef

    def init_params(key):
        dummy = jnp.zeros((1, 1), jnp.int32)
        return nn.unbox(Qwen3(mc, dtype=param_dtype, param_dtype=param_dtype).init(key, dummy)["params"])

    def from_params(params, key):
        params = jax.tree.map(lambda x: x.astype(param_dtype), params)
        return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32), "rng": key}

    abstract_params = jax.eval_shape(init_params, jax.ShapeDtypeStruct((2,), jnp.uint32))
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    state_shardings = {"params": p_shardings, "opt_state": _opt_shardings(tx, abstract_opt, p_shardings, mesh),
                       "step": replicated, "rng": replicated}
    init_fn = jax.jit(lambda key: from_params(init_params(key), key), out_shardings=state_shardings)
    from_params_fn = jax.jit(from_params, out_shardings=state_shardings)

    def forward(params, tokens, seg, pos):
        return module.apply({"params": params}, tokens, positions=pos, segment_ids=seg, compute_logits=False)

    def micro_loss(params, mb, n_targets, n_real, global_stats):
        tokens, seg, pos = mb["tokens"], mb["segment_ids"], mb["positions"]
        targets, weights = next_token_targets(tokens, seg)
        if masked:
            weights = weights * mb[LOSS_MASK].astype(weights.dtype)
        tokens, seg, pos, targets, weights = ring_order(tokens, seg, pos, targets, weights)
        out = forward(params, tokens, seg, pos)
        head, layout = head_weight(params, mc)
        ce = chunked_cross_entropy(out.final_hidden, head, targets, weights, t.loss_chunk, layout, module.dtype)
        loss = ce / n_targets
        aux = {"ce_sum": ce}
        if mc.is_moe:
            real = (seg != 0).astype(jnp.float32)
            stats = router_stats(out.router_logits, mc.num_experts_per_tok, real)
            if global_stats is None:  # counts of this micro-batch only
                balance = global_batch_balance_loss(stats) / A
            else:
                balance = global_batch_balance_loss(stats, global_stats)
            z = router_z_loss_sum(out.router_logits, real) / (out.router_logits.shape[0] * n_real)
            loss = loss + aux_coef * balance + t.router_z_loss_coef * z
            aux.update(balance=balance, z_loss=z, counts=stats.counts)
        return loss, aux

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def count_experts(params, micro):
        def body(acc, mb):
            tokens, seg, pos = ring_order(mb["tokens"], mb["segment_ids"], mb["positions"])
            out = forward(params, tokens, seg, pos)
            real = (seg != 0).astype(jnp.float32)
            return acc + router_stats(out.router_logits, mc.num_experts_per_tok, real).counts, None

        L = sum(1 for k in mc.layer_kinds if k == "moe")
        counts, _ = jax.lax.scan(body, jnp.zeros((L, mc.num_experts), jnp.float32), micro)
        return jax.lax.stop_gradient(counts)

    def step(state, batch):
        params = state["params"]
        batch = {k: batch[k] for k in batch_keys}
        _, weights = next_token_targets(batch["tokens"], batch["segment_ids"])
        if masked:
            weights = weights * batch[LOSS_MASK].astype(weights.dtype)
        n_targets = jnp.maximum(jnp.sum(weights), 1.0)
        n_real = jnp.maximum(jnp.sum((batch["segment_ids"] != 0).astype(jnp.float32)), 1.0)
        global_stats = None
        if A == 1:  # the micro-batch is the whole global batch: its own counts are the global ones
            (loss, aux), grads = grad_fn(params, batch, n_targets, n_real, None)
        else:
            micro = accumulate.split(batch, A, mesh, batch_spec)
            if mc.is_moe and t.moe_global_counts:
                counts = count_experts(params, micro)
                global_stats = RouterStats(counts=counts, prob_sum=jnp.zeros_like(counts), tokens=n_real)
            aux0 = {"ce_sum": jnp.zeros((), jnp.float32)}
            if mc.is_moe:
                L = sum(1 for k in mc.layer_kinds if k == "moe")
                aux0.update(balance=jnp.zeros((), jnp.float32), z_loss=jnp.zeros((), jnp.float32),
                            counts=jnp.zeros((L, mc.num_experts), jnp.float32))
            args = (n_targets, n_real, global_stats)
            # Per-device sums reduced once need every micro-batch term to be a sum over rows; the
            # balance loss of per-micro-batch counts is not (its counts would be one device's).
            if (accumulate.pure_data_parallel(mesh) and accumulate.spreads(t.batch_size, A, mesh, batch_spec)
                    and (global_stats is not None or not mc.is_moe)):
                grads, loss, aux = accumulate.local_sum(grad_fn, params, micro, args, aux0, mesh, batch_spec)
            else:
                grads, loss, aux = accumulate.sharded_sum(grad_fn, params, micro, args, aux0, p_shardings)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        metrics = {"loss": aux["ce_sum"] / n_targets, "total_loss": loss, "grad_norm": grad_norm,
                   "learning_rate": current_lr(opt_state), "target_tokens": n_targets, "real_tokens": n_real}
        if mc.is_moe:
            metrics.update(balance_loss=aux["balance"], router_z_loss=aux["z_loss"], expert_counts=aux["counts"])
        new_state = {"params": new_params, "opt_state": opt_state, "step": state["step"] + 1, "rng": state["rng"]}
        return new_state, metrics

    jitted = jax.jit(step, in_shardings=(state_shardings, batch_shardings),
                     out_shardings=(state_shardings, replicated), donate_argnums=0)
    return TrainStep(jitted=jitted, state_shardings=state_shardings, batch_shardings=batch_shardings, mesh=mesh,
                     model_config=mc, config=cfg, module=module, optimizer=tx, _init=init_fn,
                     _from_params=from_params_fn, batch_keys=batch_keys)
