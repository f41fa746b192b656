"""Router statistics for monitoring MoE training: expert load per layer and dropped tokens.

    stats = router_statistics(out.router_logits, cfg.num_experts_per_tok, attention_mask,
                              intermediates=state["intermediates"])
    logger.log({k: v for k, v in stats.items()})      # dict of arrays: [L_moe] per layer or scalars

Loads are expressed relative to a perfectly balanced router (1.0 = the mean load E·k/E per expert),
so the numbers read the same for any number of experts or tokens.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from qwen3_jax.losses import RouterStats, router_stats
from qwen3_jax.ops.moe import router_top_k


def expert_load(stats: RouterStats) -> dict[str, jax.Array]:
    """Per-layer load summary from `RouterStats` (which may be summed over micro-batches and shards).

    Returns:
      dict of [L] float32 arrays:
        load_min, load_max: least and most selected expert's share × E (1 = balanced);
        load_entropy: entropy of the selection shares / log E (1 = balanced, 0 = one expert);
        idle_experts: experts never selected.
    """
    counts = stats.counts
    E = counts.shape[-1]
    share = counts / jnp.maximum(jnp.sum(counts, axis=-1, keepdims=True), 1.0)
    ent = -jnp.sum(jnp.where(share > 0, share * jnp.log(jnp.where(share > 0, share, 1.0)), 0.0), axis=-1)
    return dict(load_min=E * share.min(-1), load_max=E * share.max(-1), load_entropy=ent / jnp.log(E),
                idle_experts=jnp.sum(counts == 0, axis=-1).astype(jnp.float32))


def collect_drops(intermediates: Any) -> tuple[jax.Array, jax.Array] | None:
    """(dropped, routed) token copies per MoE layer [L_moe] from sown intermediates, or None.

    The expert-parallel MoE layers sow `dropped_copies` and `routed_copies`; read them from
    `module.apply(..., mutable=["intermediates"])[1]["intermediates"]` (or the whole state).
    """
    dropped, routed = [], []

    def walk(node):
        if isinstance(node, dict) or hasattr(node, "items"):
            if "dropped_copies" in node and "routed_copies" in node:
                dropped.append(jnp.atleast_1d(jnp.asarray(node["dropped_copies"])))
                routed.append(jnp.atleast_1d(jnp.asarray(node["routed_copies"])))
            for key in sorted(node):
                if key not in ("dropped_copies", "routed_copies"):
                    walk(node[key])

    walk(intermediates)
    if not dropped:
        return None
    return jnp.concatenate(dropped), jnp.concatenate(routed)


def router_statistics(router_logits: jax.Array, top_k: int, attention_mask: jax.Array | None = None,
                      intermediates: Any = None) -> dict[str, jax.Array]:
    """Everything worth logging about the routers of one step.

    Args:
      router_logits: [L_moe, B, T, E] (`Output.router_logits`).
      top_k: experts per token.
      attention_mask: optional [B, T], 1 for real tokens.
      intermediates: optional sown intermediates of an expert-parallel run (see `collect_drops`).

    Returns:
      dict of float32 arrays: the `expert_load` entries ([L]), `router_entropy` [L] (mean entropy of
      each token's softmax / log E), `top_k_prob` [L] (mean probability mass of the chosen experts),
      and with intermediates `dropped_copies` [L], `dropped_fraction` [L] and `dropped_fraction_total`.
    """
    st = router_stats(router_logits, top_k, attention_mask)
    out = expert_load(st)
    E = router_logits.shape[-1]
    p, top, _ = router_top_k(router_logits.reshape(router_logits.shape[0], -1, E), top_k)  # [L, M, E], [L, M, R]
    logp = jnp.log(jnp.maximum(p, jnp.finfo(jnp.float32).tiny))
    w = (jnp.ones(p.shape[1], jnp.float32) if attention_mask is None
         else attention_mask.reshape(-1).astype(jnp.float32))
    mean = lambda v: jnp.einsum("M,LM->L", w, v) / jnp.maximum(jnp.sum(w), 1.0)
    out["router_entropy"] = mean(-jnp.sum(p * logp, axis=-1)) / jnp.log(E)
    out["top_k_prob"] = mean(jnp.sum(top, axis=-1))
    drops = collect_drops(intermediates) if intermediates is not None else None
    if drops is not None:
        dropped, routed = (d.astype(jnp.float32) for d in drops)
        out["dropped_copies"] = dropped
        out["dropped_fraction"] = dropped / jnp.maximum(routed, 1.0)
        out["dropped_fraction_total"] = jnp.sum(dropped) / jnp.maximum(jnp.sum(routed), 1.0)
    return out
