"""The compiled parts of generation: prefill, one decode step, and the on-device decode loop.

Cache layout: each row's prompt sits at cache slots 0..len-1 (right padding), so a token's cache
slot is its position and a batch of prompts of different lengths computes exactly what each
prompt computes alone. Row b's next token is written at slot `pos[b]` and attends to slots
<= pos[b]; finished rows stop advancing.

The loop state is a dict of arrays (`DecodeState` documents the keys). `LoopSpec` carries what the
compiled code depends on, and nothing else: it is a frozen dataclass, hashable, passed to
`jax.jit` as a static argument.

Thinking budget: when a row has spent `budget` tokens inside `<think>` without closing it, the
next tokens are taken from `spec.forced` (the stop-thinking text, which contains `</think>`)
instead of being sampled, one per step, then sampling resumes. The queue position lives in the
state, so the whole thing stays inside one `lax.while_loop`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from qwen3_jax.generate.forward import SEQ_AXIS
from qwen3_jax.generate.sampling import Sampling, apply_penalties, next_tokens


@dataclasses.dataclass(frozen=True)
class LoopSpec:
    """Static description of a decode loop (hashable: a `jax.jit` static argument).

    Attributes:
      sampling: the sampling setting without its seed.
      limit: ids >= limit are never sampled.
      stop_tokens: ids that end a row (kept in its output).
      forced: ids inserted when the thinking budget runs out (empty: no budget support).
      think_id, end_think_id: `<think>` / `</think>` ids, or -1 when unknown.
      pad_id: id written into finished rows and fed to them.
    """

    sampling: Sampling
    limit: int
    stop_tokens: tuple[int, ...] = ()
    forced: tuple[int, ...] = ()
    think_id: int = -1
    end_think_id: int = -1
    pad_id: int = 0


# DecodeState keys (B rows, S cache slots, N output slots, V vocab):
#   cache       the forward's cache layout (see forward.py), S slots per row
#   tokens      [B, N] int32   generated ids (row b valid up to n[b])
#   n           [B] int32      number generated so far
#   last        [B] int32      last generated id (fed at the next step)
#   pos         [B] int32      cache slot of `last`
#   done        [B] bool
#   in_think    [B] bool       inside an open <think> block
#   think_count [B] int32      tokens generated inside <think>
#   forced_pos  [B] int32      -1: not forcing; else index of the next forced id
#   seen        [B, V] bool    prompt + output ids (repetition penalty) or [B, 1] when unused
#   generated   [B, V] bool    output ids (presence penalty) or [B, 1] when unused
#   key         PRNG key;  step  int32 decode steps run;  max_new, budget  int32 scalars


def _mark(mask: jax.Array, ids: jax.Array, valid: jax.Array) -> jax.Array:
    """Sets mask[b, ids[b, t]] where valid[b, t] ([B, V] bool; ids [B, T])."""
    rows = jnp.broadcast_to(jnp.arange(ids.shape[0])[:, None], ids.shape)
    return mask.at[rows, ids].max(valid)


def pick(spec: LoopSpec, state: dict, logits: jax.Array, key: jax.Array) -> dict:
    """Chooses each row's next token and updates the bookkeeping (not the cache).

    Args:
      spec: the loop spec.
      state: the decode state before this token.
      logits: [B, V] float32 next-token logits.
      key: PRNG key for this step.

    Returns:
      The state with tokens, n, last, done and the thinking fields advanced (pos unchanged).
    """
    s = dict(state)
    use_pen = spec.sampling.uses_penalties
    logits = apply_penalties(logits, spec.sampling, s["seen"] if use_pen else None,
                             s["generated"] if use_pen else None)
    tok = next_tokens(logits, key, spec.sampling, spec.limit)
    if spec.forced:
        queue = jnp.asarray(spec.forced, jnp.int32)
        q = len(spec.forced)
        start = s["in_think"] & (s["budget"] >= 0) & (s["think_count"] >= s["budget"]) & (s["forced_pos"] < 0)
        fpos = jnp.where(start, 0, s["forced_pos"])
        forcing = (fpos >= 0) & (fpos < q)
        tok = jnp.where(forcing, queue[jnp.clip(fpos, 0, q - 1)], tok)
        s["forced_pos"] = jnp.where(forcing, fpos + 1, fpos)
    live = ~s["done"]
    tok = jnp.where(live, tok, spec.pad_id)
    if spec.think_id >= 0:
        counts = s["in_think"] & (tok != spec.end_think_id) & live
        s["think_count"] = s["think_count"] + counts.astype(jnp.int32)
        s["in_think"] = jnp.where(tok == spec.think_id, True, jnp.where(tok == spec.end_think_id, False, s["in_think"]))
    rows = jnp.arange(tok.shape[0])
    n_buf = s["tokens"].shape[1]
    s["tokens"] = s["tokens"].at[rows, jnp.minimum(s["n"], n_buf - 1)].set(
        jnp.where(live, tok, s["tokens"][rows, jnp.minimum(s["n"], n_buf - 1)]))
    s["n"] = s["n"] + live.astype(jnp.int32)
    s["last"] = jnp.where(live, tok, s["last"])
    if use_pen:
        s["generated"] = _mark(s["generated"], tok[:, None], live[:, None])
        s["seen"] = _mark(s["seen"], tok[:, None], live[:, None])
    stop = jnp.isin(tok, jnp.asarray(spec.stop_tokens, jnp.int32)) if spec.stop_tokens else jnp.zeros_like(live)
    s["done"] = s["done"] | (live & stop) | (s["n"] >= s["max_new"])
    return s


def _pad_cache(cache, length: int):
    def pad(path, c):
        axis = c.ndim + SEQ_AXIS[path[-1].key]
        widths = [(0, 0)] * c.ndim
        widths[axis] = (0, length - c.shape[axis])
        return jnp.pad(c, widths)

    return jax.tree_util.tree_map_with_path(pad, cache)


def prefill(fwd, vocab_size: int, spec: LoopSpec, cache_len: int, out_len: int, params, ids, lens,
            done, in_think, key, max_new, budget) -> dict:
    """Runs the prompts through the model, fills the cache and picks the first new token.

    Args:
      fwd: the forward (`forward.Stacked` or `forward.Split`).
      vocab_size: rows of the model's logits.
      spec: the loop spec.
      cache_len: S, cache slots per row (>= prompt bucket + max_new - 1).
      out_len: N, output slots per row.
      params: model params.
      ids: [B, T] prompts, right-padded.
      lens: [B] prompt lengths (>= 1).
      done: [B] rows that are padding (never generate).
      in_think: [B] whether the prompt leaves a <think> block open.
      key: PRNG key.
      max_new: int32 scalar, tokens to generate at most per row.
      budget: int32 scalar, thinking budget (-1: none).

    Returns:
      The decode state after the first generated token.
    """
    B, T = ids.shape
    mask = jnp.arange(T)[None, :] < lens[:, None]
    # The prompt attends within a T-slot cache (attention cost T², not T·S), which is then padded
    # out to S slots for decoding.
    out = fwd.apply(params, ids, mask, fwd.init_cache(B, T), jnp.zeros((B,), jnp.int32), lens - 1)
    cache = _pad_cache(out.cache, cache_len)
    V = vocab_size
    use_pen = spec.sampling.uses_penalties
    pen_shape = (B, V) if use_pen else (B, 1)
    seen = jnp.zeros(pen_shape, bool)
    if use_pen:
        seen = _mark(seen, ids, mask)
    key, sub = jax.random.split(key)
    state = dict(
        cache=fwd.constrain(cache), tokens=jnp.full((B, out_len), spec.pad_id, jnp.int32),
        n=jnp.zeros((B,), jnp.int32), last=jnp.full((B,), spec.pad_id, jnp.int32), pos=lens.astype(jnp.int32),
        done=done, in_think=in_think, think_count=jnp.zeros((B,), jnp.int32),
        forced_pos=jnp.full((B,), -1, jnp.int32), seen=seen, generated=jnp.zeros(pen_shape, bool),
        key=key, step=jnp.zeros((), jnp.int32), max_new=max_new.astype(jnp.int32),
        budget=budget.astype(jnp.int32))
    return pick(spec, state, out.logits[:, 0, :].astype(jnp.float32), sub)


def _cache_length(cache) -> int:
    """Slots per row of a cache (any layout of `forward.py`)."""
    leaves = jax.tree_util.tree_leaves_with_path(cache)
    path, c = leaves[0]
    return c.shape[SEQ_AXIS[path[-1].key]]


def decode(fwd, spec: LoopSpec, params, state: dict, stop_at) -> dict:
    """Generates until every row is done or `state["step"]` reaches `stop_at`, on device.

    Args:
      fwd: as for `prefill`.
      spec: the loop spec.
      params: model params (in the forward's layout).
      state: the decode state (donated).
      stop_at: int32 scalar; a streaming caller advances it a few steps per call.

    Returns:
      The advanced state.
    """
    S = _cache_length(state["cache"])
    slots = jnp.arange(S)[None, :]

    def cond(s):
        return (s["step"] < stop_at) & ~jnp.all(s["done"])

    def step(params, s):
        out = fwd.apply(params, s["last"][:, None], slots <= s["pos"][:, None], s["cache"], s["pos"], None)
        key, sub = jax.random.split(s["key"])
        s = dict(s, cache=fwd.constrain(out.cache), key=key)
        live = ~s["done"]
        s = pick(spec, s, out.logits[:, 0, :].astype(jnp.float32), sub)
        s["pos"] = s["pos"] + live.astype(jnp.int32)
        s["step"] = s["step"] + 1
        return s

    if not fwd.carry_params:
        return jax.lax.while_loop(cond, lambda s: step(params, s), state)

    # The params ride in the carry behind a barrier, so XLA sees them change at every step and
    # cannot hoist work on them (a bfloat16 -> float32 copy of every weight) out of the loop.
    def body(carry):
        p, s = carry
        p = jax.lax.optimization_barrier(p)
        return p, step(p, s)

    return jax.lax.while_loop(lambda c: cond(c[1]), body, (params, state))[1]
