"""SFT samples: conversations rendered in the Qwen3 chat format, with a loss mask on assistant tokens.

    sample = tokenize_chat(messages, tokenizer, tools=None)
    sample.ids        # int32 [n], the rendered conversation (no generation prompt)
    sample.loss_mask  # bool [n], True on every token the trained assistant turn produced

The text is ``chat.render(messages, tools, add_generation_prompt=False)``, byte for byte the Qwen3
chat template. An assistant turn renders as ``<|im_start|>assistant\\n`` + body + ``<|im_end|>``;
the loss covers the body (think block, answer, tool calls) and the closing ``<|im_end|>`` of the
last assistant turn (of every one with ``train_on="all"``), i.e.
exactly what the model generates after the ``<|im_start|>assistant\\n`` prompt. Everything else
(system, user, tool responses, the role headers, the newline after ``<|im_end|>``) is context.

Each piece of text between mask boundaries is tokenized on its own, so an assistant body is split
into tokens the way the model produces it at inference (it starts right after the prompt's
``\\n``); as ``<|im_start|>`` / ``<|im_end|>`` are special tokens that split text anyway, this
equals tokenizing the whole string in all but contrived cases.

As the template does, reasoning of assistant turns before the last user query is not rendered
(Qwen3 keeps no thinking in history), and a final assistant turn always carries a think block,
empty (``<think>\\n\\n</think>\\n\\n``) when it has no reasoning: the non-thinking format.

Which turns are trained (``train_on``) defaults to "last": a history turn renders as
``<|im_start|>assistant\\nA<|im_end|>``, with no think block at all (the template of Qwen3's
``tokenizer_config.json`` strips history reasoning), while at inference the model always opens
its reply with a think block (empty in non-thinking mode). Training on history turns would teach
replies with no think block, which the format reward (`rewards.format_problem`) scores 0 and the
report's fusion format (arXiv 2505.09388 §4.3) never shows. "all" is still available for data
whose earlier assistant turns are wanted (e.g. tool-call turns after the last user message, which
keep their think block); experiments/hybrid_thinking/run.py trains with "last".
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator, Sequence

import numpy as np

from qwen3_jax.text import chat

ASSISTANT_HEADER = "<|im_start|>assistant\n"
TURN_END = "<|im_end|>"


class SFTDataError(ValueError):
    """A record that is not a trainable conversation."""


@dataclasses.dataclass(frozen=True)
class ChatSample:
    """One tokenized conversation.

    Attributes:
        ids: int32 [n] token ids.
        loss_mask: bool [n], True on tokens an assistant turn produced.
        text: the rendered conversation.
    """

    ids: np.ndarray
    loss_mask: np.ndarray
    text: str

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def check_conversation(record: Any, where: str = "record") -> tuple[list[dict], list[dict] | None]:
    """Pulls (messages, tools) out of a record and checks it is a trainable conversation.

    Args:
        record: ``{"messages": [...], "tools": [...]?}`` or a bare list of messages.
        where: names the record in error messages (e.g. "data.jsonl:12").

    Returns:
        (messages, tools or None).

    Raises:
        SFTDataError: not a conversation, invalid messages, or no assistant turn.
    """
    if isinstance(record, dict):
        if "messages" not in record:
            raise SFTDataError(f"{where}: not a conversation (an object without 'messages'; keys: "
                               f"{sorted(record)[:8]})")
        messages, tools = record["messages"], record.get("tools")
    elif isinstance(record, list):
        messages, tools = record, None
    else:
        raise SFTDataError(f"{where}: not a conversation (expected an object with 'messages' or a list "
                           f"of messages, got {type(record).__name__})")
    if tools is not None and not isinstance(tools, list):
        raise SFTDataError(f"{where}: 'tools' must be a list, got {type(tools).__name__}")
    try:
        chat.validate(messages, tools)
    except chat.ChatFormatError as e:
        raise SFTDataError(f"{where}: {e}") from None
    if not any(m["role"] == "assistant" for m in messages):
        raise SFTDataError(f"{where}: the conversation has no assistant turn (nothing to train on)")
    return list(messages), tools


def assistant_spans(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of each assistant turn's body plus its ``<|im_end|>``."""
    spans, pos = [], 0
    while True:
        start = text.find(ASSISTANT_HEADER, pos)
        if start < 0:
            return spans
        body = start + len(ASSISTANT_HEADER)
        end = text.find(TURN_END, body)
        end = len(text) if end < 0 else end + len(TURN_END)
        spans.append((body, end))
        pos = end


def tokenize_chat(messages: Sequence[dict], tokenizer, tools: Sequence[dict] | None = None,
                  train_on: str = "last", where: str = "conversation") -> ChatSample:
    """Renders and tokenizes a conversation with an assistant-only loss mask.

    Args:
        messages: chat messages (see ``chat.render``); assistant turns may carry
            ``reasoning_content``, inline ``<think>…</think>`` or ``tool_calls``.
        tokenizer: a ``qwen3_jax.Tokenizer``.
        tools: optional tool schemas.
        train_on: only the "last" assistant turn (default; see the module docstring), or "all".
        where: names the conversation in error messages.

    Returns:
        The sample.

    Raises:
        SFTDataError: invalid conversation, no assistant turn, or message text that itself
            contains chat control tokens (the turns could not be told apart).
    """
    if train_on not in ("all", "last"):
        raise ValueError(f"train_on must be 'all' or 'last', got {train_on!r}")
    messages, tools = check_conversation({"messages": list(messages), "tools": tools}
                                         if tools is not None else list(messages), where)
    text = chat.render(messages, tools=tools, add_generation_prompt=False)
    spans = assistant_spans(text)
    n_assistant = sum(m["role"] == "assistant" for m in messages)
    if len(spans) != n_assistant or text.count("<|im_start|>") != text.count(TURN_END):
        raise SFTDataError(f"{where}: message text contains chat control tokens (<|im_start|>/<|im_end|>); "
                           f"found {len(spans)} assistant turns for {n_assistant} assistant messages")
    if train_on == "last":
        spans = spans[-1:]
    pieces, mask_flags, pos = [], [], 0
    for start, end in spans:
        pieces += [text[pos:start], text[start:end]]
        mask_flags += [False, True]
        pos = end
    pieces.append(text[pos:])
    mask_flags.append(False)
    ids, mask = [], []
    for piece, flag in zip(pieces, mask_flags):
        if piece:
            toks = tokenizer.encode(piece)
            ids += toks
            mask += [flag] * len(toks)
    return ChatSample(np.asarray(ids, np.int32), np.asarray(mask, bool), text)


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[str, list[dict], list[dict] | None]]:
    """Yields (where, messages, tools) for each non-blank line of a chat JSONL file.

    Raises:
        SFTDataError: naming ``path:line`` for a line that is not JSON or not a trainable
            conversation.
        FileNotFoundError: when the file does not exist.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SFTDataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            messages, tools = check_conversation(record, where)
            yield where, messages, tools


def load_samples(paths: Sequence[str | os.PathLike], tokenizer, train_on: str = "last") -> list[ChatSample]:
    """Reads and tokenizes every conversation of some JSONL files (checks each line first)."""
    return [tokenize_chat(m, tokenizer, tools=t, train_on=train_on, where=w)
            for p in paths for w, m, t in read_jsonl(p)]
