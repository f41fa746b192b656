"""Training data of the demo model's stages, built from the arithmetic task (`post.arithmetic`).

    texts = pretraining_texts(20_000, seed=0)          # plain text: worked problems + short stories
    think = [thinking_conversation(p) for p in problems(1000)]        # cold-start SFT (long CoT)
    fused = fusion_conversations(problems(2000), seed=0)               # /think, /no_think, multi-turn
    budget = budget_sample(p, tokenizer, 8)            # a thought cut by the thinking budget

Conversations are message lists for `sft_data.tokenize_chat`; the fusion mix is `fusion.fuse`
(Qwen3 report §4.3). A budget sample reproduces token for token what the engine produces when
the thinking budget runs out (the thought cut after ``budget`` tokens, the stop-thinking text
inserted), so the model learns to answer right after it.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np

from qwen3_jax.post.arithmetic import Problem, problems as draw_problems
from qwen3_jax.post.fusion import FusionConfig, fuse
from qwen3_jax.post.sft_data import ChatSample


def worked_text(p: Problem) -> str:
    """A pretraining document: the question, the column method and the answer, as plain text."""
    return f"Question: {p.question}\nWork:\n{p.reasoning()}\nAnswer: {p.answer}"


def pretraining_texts(n: int, seed: int = 0, story_share: float = 0.2) -> list[str]:
    """``n`` plain-text documents: worked problems, plus short stories (the project's synthetic
    corpus) for general English."""
    from qwen3_jax.train.data.synthetic import general_doc

    rng = random.Random(seed)
    n_story = int(round(n * story_share))
    stories = [general_doc(np.random.default_rng([seed, 7, i])) for i in range(n_story)]
    texts = [worked_text(p) for p in draw_problems(n - n_story, seed=seed)] + stories
    rng.shuffle(texts)
    return texts


def thinking_conversation(p: Problem) -> list[dict]:
    """[user, assistant] with the column method as reasoning and the integer as content."""
    return [{"role": "user", "content": p.question},
            {"role": "assistant", "content": str(p.answer), "reasoning_content": p.reasoning()}]


def fusion_conversations(items: Sequence[Problem], seed: int = 0, no_think_share: float = 0.5,
                         config: FusionConfig = FusionConfig()) -> list[list[dict]]:
    """The thinking-mode fusion mix of ``items``: a share answered in non-thinking mode, flags in the
    user or system message, unflagged thinking samples, multi-turn switches (see `fusion.fuse`)."""
    rng = random.Random(seed)
    think, no_think = [], []
    for p in items:
        (no_think if rng.random() < no_think_share else think).append(thinking_conversation(p))
    return fuse(think, no_think, config, seed=seed)


def budget_sample(p: Problem, tokenizer, budget: int, flag: str | None = None) -> ChatSample:
    """A thinking reply cut by a thinking budget of ``budget`` tokens, as the engine makes it.

    The loss covers the model's own tokens (``<think>``, the cut thought, the answer and
    ``<|im_end|>``), not the inserted stop-thinking text.
    """
    from qwen3_jax.generate.chat import STOP_THINKING, STOP_THINKING_PREFIX

    question = p.question if flag is None else f"{p.question} {flag}"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                           tokenize=True)
    thought = tokenizer.encode("<think>\n" + p.reasoning())
    cut = thought[:1 + budget]  # <think> is not counted by the budget; "\n" and the thought are
    forced = tokenizer.encode(STOP_THINKING_PREFIX + STOP_THINKING)
    answer = tokenizer.encode(str(p.answer)) + [tokenizer.im_end_id] + tokenizer.encode("\n")
    ids = list(prompt) + cut + forced + answer
    mask = [False] * len(prompt) + [True] * len(cut) + [False] * len(forced) + [True] * (len(answer) - 1) + [False]
    return ChatSample(np.asarray(ids, np.int32), np.asarray(mask, bool), tokenizer.decode(ids))
