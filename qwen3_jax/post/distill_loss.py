"""Strong-to-weak distillation losses: the KL between teacher and student next-token distributions.

Qwen3's small models (arXiv 2505.09388 §4.5) are distilled from a large teacher in two phases:
off-policy (the student learns on the teacher's sampled replies, in both thinking modes) and
on-policy (the student samples, and is trained to match the teacher's logits on its own tokens
"by minimising the KL divergence"). Both score every position of a sequence with both models and
minimise, on the masked positions,

    forward:  KL(p_teacher || p_student) = Σ_v p_t(v) (log p_t(v) - log p_s(v))
    reverse:  KL(p_student || p_teacher) = Σ_v p_s(v) (log p_s(v) - log p_t(v))

over the full vocabulary (teacher and student share the tokenizer, so the vocabularies must be
equal). Forward KL is the default; reverse KL is mode-seeking and is the usual choice on-policy.
`chunked_kl` never holds more than one chunk of either model's [B, C, V] logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qwen3_jax.post.logprobs import chunk_apply, head_logits

DIRECTIONS = ("forward", "reverse")


class VocabularyMismatch(ValueError):
    """Teacher and student do not share one vocabulary."""


def check_vocabularies(teacher_config, student_config, teacher_tokenizer=None, student_tokenizer=None) -> None:
    """Raises VocabularyMismatch when the two models' vocabularies differ.

    The models' ``vocab_size`` must be equal; when both tokenizers are known (each a
    `qwen3_jax.Tokenizer`, e.g. from the checkpoints' tokenizer.json) their token -> id maps, added
    tokens included, must be equal too: two BPEs of the same size give the same id different
    strings, and the KL would then compare unrelated tokens.
    """
    if teacher_config.vocab_size != student_config.vocab_size:
        raise VocabularyMismatch(f"the teacher's vocabulary ({teacher_config.vocab_size} ids) differs from the "
                                 f"student's ({student_config.vocab_size}); distillation needs one shared tokenizer")
    if teacher_tokenizer is None or student_tokenizer is None:
        return
    t = teacher_tokenizer.backend.get_vocab(with_added_tokens=True)
    s = student_tokenizer.backend.get_vocab(with_added_tokens=True)
    if t == s:
        return
    t_ids, s_ids = {i: tok for tok, i in t.items()}, {i: tok for tok, i in s.items()}
    diff = sorted(i for i in t_ids.keys() | s_ids.keys() if t_ids.get(i) != s_ids.get(i))
    i = diff[0]
    raise VocabularyMismatch(f"the teacher's tokenizer ({len(t)} tokens) differs from the student's ({len(s)} "
                             f"tokens) at {len(diff)} ids, first id {i}: teacher {t_ids.get(i)!r}, student "
                             f"{s_ids.get(i)!r}; distillation needs one shared tokenizer")


def token_kl(student_logits: jax.Array, teacher_logits: jax.Array, direction: str = "forward",
             temperature: float = 1.0) -> jax.Array:
    """Per-position KL [B, T] between the two models' distributions (float32).

    Args:
        student_logits, teacher_logits: [B, T, V].
        direction: "forward" (teacher || student) or "reverse" (student || teacher).
        temperature: both logit sets are divided by it.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise VocabularyMismatch(f"teacher logits have {teacher_logits.shape[-1]} ids, the student's "
                                 f"{student_logits.shape[-1]}")
    ls = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    lt = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature, axis=-1)
    if direction == "forward":
        return jnp.sum(jnp.exp(lt) * (lt - ls), axis=-1)
    return jnp.sum(jnp.exp(ls) * (ls - lt), axis=-1)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Σ values·mask / max(Σ mask, 1)."""
    mask = mask.astype(jnp.float32)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def chunked_kl(student_hidden: jax.Array, student_head: tuple[jax.Array, str], teacher_hidden: jax.Array,
               teacher_head: tuple[jax.Array, str], chunk: int, direction: str = "forward",
               temperature: float = 1.0) -> jax.Array:
    """`token_kl` of the two models from their final hidden states, one sequence chunk at a time.

    Args:
        student_hidden: [B, T, D_s]; teacher_hidden: [B, T, D_t] (no gradient flows into it).
        student_head, teacher_head: (matrix, layout) from `logprobs.head_weight`.
        chunk: positions per chunk (0: all at once).
        direction, temperature: as in `token_kl`.

    Returns:
        float32 [B, T] per-position KL.
    """
    teacher_hidden = jax.lax.stop_gradient(teacher_hidden)

    def block(hs, ht):
        return token_kl(head_logits(hs, *student_head), head_logits(ht, *teacher_head), direction, temperature)

    return chunk_apply(block, student_hidden, (teacher_hidden,), chunk)
