"""Sampling settings and the function that turns next-token logits into tokens.

`Sampling` is a small frozen dataclass: hashable, so the decode loop can take it as a static
argument of `jax.jit` (one compile per distinct setting, none per seed: the seed travels as a key).
Qwen's two recommended settings (the "Best Practices" of the Qwen3 model cards) are `THINKING` and `NON_THINKING`; `GREEDY` is
temperature 0.

Order of operations, the one transformers applies for `generate(do_sample=True)`:
  penalties -> temperature -> top-k -> top-p -> min-p -> draw.
Ids at or above the vocabulary limit (the padded rows of the embedding, 151,669..151,935 for the
real vocab) are set to -inf after the temperature divides the logits (dividing -inf by a huge T
can give NaN when XLA multiplies by a flushed-to-zero 1/T, and top-k ranks NaN first), so they can
never be drawn.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp

# Qwen3's tokenizer has 151,669 ids; rows above that in the 151,936-row embedding are padding.
QWEN3_TOKENIZER_SIZE = 151_669
_NEG = -jnp.inf
# Temperatures below this sample the argmax: logits / T would overflow float32 (and turn into NaN)
# long before the draw could differ from the greedy choice.
MIN_TEMPERATURE = 1e-5
# Temperatures above this are refused: 1/T must stay a normal float32 (XLA on CPU flushes
# subnormals such as 1/3e38 to zero) and T itself must fit float32 (max 3.4e38). Anything this
# large already samples uniformly among the candidates.
MAX_TEMPERATURE = 1e30
SEED_LIMIT = 2**32


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How to pick the next token.

    Attributes:
      temperature: 0 means greedy (argmax); otherwise logits are divided by it. Finite; values
        below `MIN_TEMPERATURE` are greedy too; values above `MAX_TEMPERATURE` are refused.
      top_p: keep the smallest set of most likely tokens whose probability sums to >= top_p
        (1.0 keeps all).
      top_k: keep the k most likely tokens (0 keeps all).
      min_p: keep tokens whose probability is >= min_p times the largest one (0 keeps all).
      presence_penalty: subtracted from the logit of every token already generated (0 disables).
      repetition_penalty: tokens seen in the prompt or output get logit / p if positive, logit * p
        if negative (1.0 disables; the transformers convention).
      seed: seed of the random draws, an integer in [0, 2**32); the same seed gives the same tokens.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self):
        problems = []
        for name in ("temperature", "top_p", "min_p", "presence_penalty", "repetition_penalty", "top_k", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise ValueError(f"invalid sampling: {name} must be a number, got {type(v).__name__} {v!r}")
            if not math.isfinite(v):
                raise ValueError(f"invalid sampling: {name} must be finite, got {v}")
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            problems.append(f"temperature must lie in [0, {MAX_TEMPERATURE:g}] (0 is greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must lie in (0, 1], got {self.top_p}")
        if isinstance(self.top_k, bool) or int(self.top_k) != self.top_k or self.top_k < 0:
            problems.append(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k}")
        if not 0 <= self.min_p <= 1:
            problems.append(f"min_p must lie in [0, 1], got {self.min_p}")
        if not -2 <= self.presence_penalty <= 2:
            problems.append(f"presence_penalty must lie in [-2, 2], got {self.presence_penalty}")
        if not self.repetition_penalty > 0:
            problems.append(f"repetition_penalty must be > 0 (1 disables it), got {self.repetition_penalty}")
        if int(self.seed) != self.seed or not 0 <= self.seed < SEED_LIMIT:
            problems.append(f"seed must be an integer in [0, 2**32), got {self.seed}")
        if problems:
            raise ValueError("invalid sampling: " + "; ".join(problems))
        object.__setattr__(self, "top_k", int(self.top_k))
        object.__setattr__(self, "seed", int(self.seed))

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax (temperature 0, or below `MIN_TEMPERATURE`)."""
        return self.temperature < MIN_TEMPERATURE

    @property
    def uses_penalties(self) -> bool:
        """True when the loop must track which tokens were seen."""
        return self.presence_penalty != 0 or self.repetition_penalty != 1

    def replace(self, **changes) -> "Sampling":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def static(self) -> "Sampling":
        """This setting without its seed: the part a compiled loop depends on."""
        return dataclasses.replace(self, seed=0)


THINKING = Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)
NON_THINKING = Sampling(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0)
GREEDY = Sampling(temperature=0.0)


def vocab_limit(vocab_size: int, tokenizer_size: int | None = None) -> int:
    """The first id that must never be sampled.

    Args:
      vocab_size: rows of the model's embedding (151,936 for Qwen3).
      tokenizer_size: number of ids of the tokenizer in use, when known.

    Returns:
      min(vocab_size, tokenizer_size); without a tokenizer, 151,669 for a real-size vocabulary
      (the padded rows are never real tokens) and vocab_size for small test vocabularies.
    """
    if tokenizer_size is not None:
        return min(vocab_size, int(tokenizer_size))
    return QWEN3_TOKENIZER_SIZE if vocab_size > QWEN3_TOKENIZER_SIZE else vocab_size


def apply_penalties(logits: jax.Array, sampling: Sampling, seen: jax.Array | None,
                    generated: jax.Array | None) -> jax.Array:
    """Presence and repetition penalties.

    Args:
      logits: [B, V] float32.
      sampling: the setting (penalty values are static).
      seen: [B, V] bool, tokens in the prompt or the output (repetition penalty).
      generated: [B, V] bool, tokens in the output so far (presence penalty).

    Returns:
      [B, V] penalised logits.
    """
    if sampling.repetition_penalty != 1 and seen is not None:
        p = sampling.repetition_penalty
        logits = jnp.where(seen, jnp.where(logits > 0, logits / p, logits * p), logits)
    if sampling.presence_penalty != 0 and generated is not None:
        logits = logits - sampling.presence_penalty * generated.astype(logits.dtype)
    return logits


def candidate_logits(logits: jax.Array, sampling: Sampling, limit: int) -> tuple[jax.Array, jax.Array]:
    """The tokens that survive temperature, top-k, top-p and min-p, most likely first.

    Args:
      logits: [B, V] float32 (penalties already applied).
      sampling: the setting (not greedy).
      limit: ids >= limit are never candidates.

    Returns:
      (scaled logits [B, C] with -inf for removed candidates, their ids [B, C]); C = top_k, or V
      when top_k is 0. Sorted by decreasing logit; the first entry is always kept.
    """
    V = logits.shape[-1]
    # Mask after scaling: the scaled value of a masked id is whatever the division made of it.
    logits = jnp.where(jnp.arange(V) < limit, logits / sampling.temperature, _NEG)
    k = min(sampling.top_k, limit) if sampling.top_k > 0 else V
    # lax.top_k returns values sorted descending (ties: lower index first), so top-k is a slice
    # and top-p a cumulative sum over the survivors.
    vals, ids = jax.lax.top_k(logits, k)  # [B, C]
    probs = jax.nn.softmax(vals, axis=-1)
    keep = jnp.ones(vals.shape, bool)
    if sampling.top_p < 1:
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly more likely tokens
        keep &= before < sampling.top_p
    if sampling.min_p > 0:
        # A ratio to the largest probability, so renormalising after top-k/top-p changes nothing.
        keep &= probs >= sampling.min_p * probs[:, :1]
    keep = keep.at[:, 0].set(True)
    return jnp.where(keep, vals, _NEG), ids


def next_tokens(logits: jax.Array, key: jax.Array, sampling: Sampling, limit: int) -> jax.Array:
    """Picks one token per row.

    Args:
      logits: [B, V] float32 next-token logits (penalties already applied).
      key: a PRNG key.
      sampling: the setting.
      limit: ids >= limit are never picked.

    Returns:
      [B] int32 token ids.
    """
    if sampling.greedy:
        return jnp.argmax(jnp.where(jnp.arange(logits.shape[-1]) < limit, logits, _NEG), axis=-1).astype(jnp.int32)
    vals, ids = candidate_logits(logits, sampling, limit)
    choice = jax.random.categorical(key, vals, axis=-1)
    return jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


def candidate_probs(logits: jax.Array, sampling: Sampling, limit: int) -> jax.Array:
    """The distribution `next_tokens` draws from, over the full vocabulary.

    Args:
      logits: [B, V] float32.
      sampling: the setting (not greedy).
      limit: ids >= limit get probability 0.

    Returns:
      [B, V] probabilities (zero outside the candidate set).
    """
    vals, ids = candidate_logits(logits, sampling, limit)
    p = jax.nn.softmax(vals, axis=-1)
    rows = jnp.arange(logits.shape[0])[:, None]
    return jnp.zeros(logits.shape, p.dtype).at[rows, ids].set(p)
