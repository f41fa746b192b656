"""Per-token log-probabilities and entropies of a model on given sequences (RL and distillation).

Position t of a row scores token t + 1 (``targets`` are the tokens shifted left). With the real
vocabulary the [B, T, 151936] logits of a batch are large, so `chunked_token_logprobs` applies the
LM head to ``chunk`` positions at a time inside a rematerialised ``lax.scan``: the forward keeps
only the per-token results, the backward recomputes one chunk's logits at a time.

``temperature`` divides the logits first: the RL objective scores the policy the sampler drew
from (logits / T), as TRL's GRPO does; top-k / top-p truncation of the sampler is not modelled.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp

from qwen3_jax.config import Qwen3Config


def logprobs_from_logits(logits: jax.Array, targets: jax.Array, temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """(log p(target) [B, T], entropy [B, T]) from logits [B, T, V], in float32."""
    logits = logits.astype(jnp.float32) / temperature
    logp_all = jax.nn.log_softmax(logits, axis=-1)
    logp = jnp.take_along_axis(logp_all, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    return logp, entropy


def head_weight(params, config: Qwen3Config) -> tuple[jax.Array, str]:
    """The LM-head matrix and its layout: the tied embedding [V, D] ("VD") or lm_head [D, V] ("DV")."""
    if config.tie_word_embeddings:
        return params["embed_tokens"]["embedding"], "VD"
    return params["lm_head"]["kernel"], "DV"


def chunk_apply(fn, hidden: jax.Array, extras: tuple, chunk: int):
    """Maps ``fn(hidden_chunk, *extra_chunks) -> pytree of [B, C] arrays`` over sequence chunks.

    Rematerialised per chunk; T is padded to a multiple of ``chunk`` and the padding cut off.

    Args:
        fn: per-chunk function.
        hidden: [B, T, D].
        extras: arrays [B, T, ...] chunked alongside.
        chunk: positions per chunk; 0 or >= T runs one block.
    """
    B, T = hidden.shape[:2]
    if chunk <= 0 or chunk >= T:
        return fn(hidden, *extras)
    n = -(-T // chunk)
    pad = n * chunk - T

    def split(x):
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return x.reshape(B, n, chunk, *x.shape[2:]).swapaxes(0, 1)

    block = jax.checkpoint(fn)
    _, out = jax.lax.scan(lambda c, xs: (c, block(*xs)), None, (split(hidden),) + tuple(split(e) for e in extras))
    return jax.tree.map(lambda y: y.swapaxes(0, 1).reshape(B, n * chunk, *y.shape[3:])[:, :T], out)


def head_logits(h: jax.Array, head: jax.Array, layout: str) -> jax.Array:
    """[B, C, D] hidden -> [B, C, V] float32 logits through the LM head."""
    eq = "bcd,vd->bcv" if layout == "VD" else "bcd,dv->bcv"
    return jnp.einsum(eq, h, head.astype(h.dtype), preferred_element_type=jnp.float32)


def chunked_token_logprobs(hidden: jax.Array, head: jax.Array, layout: str, targets: jax.Array, chunk: int,
                           temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """`logprobs_from_logits(hidden @ head, targets)` without the full [B, T, V] logits.

    Args:
        hidden: [B, T, D] final-normed hidden states.
        head, layout: from `head_weight`.
        targets: [B, T] token ids scored at each position.
        chunk: positions per chunk (0: all at once).
        temperature: logits are divided by it.

    Returns:
        (log-probabilities [B, T], entropies [B, T]), float32.
    """
    return chunk_apply(lambda h, t: logprobs_from_logits(head_logits(h, head, layout), t, temperature),
                       hidden, (targets,), chunk)


def _has_hidden_output(module) -> bool:
    return "compute_logits" in inspect.signature(type(module).__call__).parameters


def final_hidden(module, params, tokens, segment_ids=None, positions=None):
    """The final-normed hidden states [B, T, D] (and router logits), without the LM head when the
    model supports it; else None (callers then use the logits)."""
    if not _has_hidden_output(module):
        return None
    out = module.apply({"params": params}, tokens, positions=positions, segment_ids=segment_ids,
                       compute_logits=False)
    return out.final_hidden


def token_logprobs(module, params, tokens: jax.Array, segment_ids: jax.Array | None = None,
                   positions: jax.Array | None = None, chunk: int = 0,
                   temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """Log-probability and entropy of each next token of ``tokens`` under the model.

    Args:
        module: a `qwen3_jax.Qwen3` Linen module.
        params: its params.
        tokens: [B, T] ids; position t scores ``tokens[:, t + 1]`` (the last column scores id 0).
        segment_ids: [B, T] (0 = padding; tokens attend within their segment).
        positions: [B, T] RoPE positions.
        chunk: positions per LM-head chunk (0: all at once).
        temperature: logits are divided by it.

    Returns:
        (logp [B, T], entropy [B, T]) float32; mask them with the caller's weights.
    """
    targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
    hidden = final_hidden(module, params, tokens, segment_ids, positions)
    if hidden is None:
        out = module.apply({"params": params}, tokens, positions=positions, segment_ids=segment_ids)
        return logprobs_from_logits(out.logits, targets, temperature)
    head, layout = head_weight(params, module.config)
    return chunked_token_logprobs(hidden, head, layout, targets, chunk, temperature)
