"""Parsing Qwen3 output into reasoning, answer and tool calls, one-shot or streaming.

The split follows the Qwen3 model cards ("Switching Between Thinking and Non-Thinking Mode"): everything before the *last*
``</think>`` (id 151668) is reasoning, everything after it is the answer, both
decoded with ``skip_special_tokens=True`` (which keeps the think and tool tags,
as they are not special) and stripped of surrounding newlines. Two additions:

* the ``<think>`` the model opens its reply with is dropped from the reasoning
  (the README leaves it in), and a reply that opened ``<think>`` but has no
  ``</think>`` yet is all reasoning, not answer (what a stream must show while
  the model is still thinking; the README would call it answer);
* ``<tool_call>{json}</tool_call>`` blocks in the answer become structured
  calls ``{"name", "arguments"}`` and are removed from the content. Malformed
  blocks are listed in ``errors``; parsing never raises on model output.

``StreamParser`` gives the same result incrementally, one token id at a time.
It works on bytes so a character split over several tokens appears only once
complete, and it holds back trailing newlines (they might be the final ones,
which the one-shot parser strips). Invariant, checked by the tests: after any
prefix of ids, the text it has emitted equals ``parse`` of that prefix, except
for a character still incomplete at the end of the prefix.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Any, Sequence

THINK, END_THINK = "<think>", "</think>"
CALL, END_CALL = "<tool_call>", "</tool_call>"


@dataclass(frozen=True)
class ParsedReply:
    """A model reply split into its parts.

    Attributes:
        reasoning: the thinking text, without the think tags ('' if none).
        content: the answer text without tool-call blocks.
        tool_calls: ``{"name": str, "arguments": Any}`` per well-formed block.
        errors: one message per malformed or unterminated tool-call block.
    """

    reasoning: str
    content: str
    tool_calls: tuple[dict, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Delta:
    """One streaming event.

    Attributes:
        kind: "reasoning" or "content" (new text of that part), "tool_call" (a
            block just closed), or "retract" (a later ``</think>`` turned all
            content and tool calls emitted so far into reasoning; discard them).
        text: the new text; for "tool_call" the raw block between the tags.
        tool_call: the parsed call for a well-formed block, else None.
        error: why a block could not be parsed, else None.
    """

    kind: str
    text: str = ""
    tool_call: dict | None = None
    error: str | None = None


def parse_tool_call(block: str, index: int) -> tuple[dict | None, str | None]:
    """Parses the JSON between ``<tool_call>`` and ``</tool_call>``.

    Args:
        block: the raw text between the tags.
        index: the block's position in the reply, used in error messages.

    Returns:
        ``(call, None)`` on success, ``(None, message)`` otherwise.
    """
    try:
        obj = json.loads(block)
    except json.JSONDecodeError as e:
        return None, f"tool call {index}: invalid JSON ({e.msg} at char {e.pos}): {block.strip()[:80]!r}"
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None, f'tool call {index}: expected an object with a string "name", got {block.strip()[:80]!r}'
    return {"name": obj["name"], "arguments": obj.get("arguments", {})}, None


def _drop_think_open(text: str) -> str:
    stripped = text.lstrip("\n")
    return stripped[len(THINK):] if stripped.startswith(THINK) else text


def parse_text(text: str, starts_in_reasoning: bool = False) -> ParsedReply:
    """Parses decoded reply text; see the module docstring for the rules.

    Args:
        text: the reply, as decoded with ``skip_special_tokens=True``.
        starts_in_reasoning: the prompt already opened ``<think>`` (as the
            Qwen3-2507 thinking template does), so the reply starts in reasoning.

    Returns:
        The parsed reply.
    """
    cut = text.rfind(END_THINK)
    if cut >= 0:
        reasoning_raw, content_raw = _drop_think_open(text[:cut]), text[cut + len(END_THINK):]
    elif starts_in_reasoning or text.lstrip("\n").startswith(THINK):
        reasoning_raw, content_raw = _drop_think_open(text), ""
    else:
        reasoning_raw, content_raw = "", text

    segments, calls, errors = [], [], []
    pos, index = 0, 0
    while True:
        start = content_raw.find(CALL, pos)
        if start < 0:
            segments.append(content_raw[pos:])
            break
        segments.append(content_raw[pos:start])
        end = content_raw.find(END_CALL, start + len(CALL))
        if end < 0:
            errors.append(f"tool call {index}: no closing {END_CALL}")
            break
        call, error = parse_tool_call(content_raw[start + len(CALL):end], index)
        calls.append(call) if call is not None else errors.append(error)
        pos, index = end + len(END_CALL), index + 1
    return ParsedReply(reasoning_raw.strip("\n"), "".join(segments).strip("\n"),
                       tuple(calls), tuple(errors))


def parse(output: str | Sequence[int], tokenizer: Any = None,
          starts_in_reasoning: bool = False) -> ParsedReply:
    """Splits a model reply into reasoning, content and tool calls.

    Args:
        output: generated text, or generated ids (the reply only, no prompt).
        tokenizer: a ``Tokenizer``; required when ``output`` is ids.
        starts_in_reasoning: the prompt already opened ``<think>``.

    Returns:
        The parsed reply.

    Raises:
        ValueError: ids were given without a tokenizer.
    """
    if isinstance(output, str):
        return parse_text(output, starts_in_reasoning)
    if tokenizer is None:
        raise ValueError("parse() needs tokenizer= to decode token ids")
    return parse_text(tokenizer.decode([int(i) for i in output], skip_special_tokens=True),
                      starts_in_reasoning)


class _Channel:
    """Accumulates one part's text as it will look after ``strip('\\n')``.

    Leading newlines are dropped; trailing ones are held back until more text
    follows, because they might be the last ones.
    """

    def __init__(self) -> None:
        self.started = False
        self.held = ""
        self.parts: list[str] = []

    def push(self, text: str) -> str:
        if not self.started:
            text = text.lstrip("\n")
            if not text:
                return ""
            self.started = True
        text = self.held + text
        body = text.rstrip("\n")
        self.held = text[len(body):]
        if body:
            self.parts.append(body)
        return body

    def text(self) -> str:
        return "".join(self.parts)


class StreamParser:
    """Parses a reply incrementally: feed ids one at a time, get text as it completes.

    Example::

        sp = StreamParser(tok)
        for token_id in generated:
            for d in sp.feed(token_id):
                print(d.kind, d.text)
        sp.finish(); reply = sp.result()

    Attributes:
        tokenizer: the ``Tokenizer`` whose ids are fed.
    """

    def __init__(self, tokenizer: Any, starts_in_reasoning: bool = False):
        """Creates a parser.

        Args:
            tokenizer: a ``Tokenizer`` (needs ``token_bytes`` and ``is_special``).
            starts_in_reasoning: the prompt already opened ``<think>``.
        """
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pieces: list[str] = []   # all decoded text, for retraction and result()
        self._starts_in_reasoning = starts_in_reasoning
        # "start": only newlines so far, the next text decides the mode.
        self._mode = "start"
        self._reasoning, self._content = _Channel(), _Channel()
        self._block: list[str] | None = None   # text of an open tool-call block
        self._blocks_seen = 0
        self._tags = {tokenizer.think_id: THINK, tokenizer.end_think_id: END_THINK,
                      tokenizer.token_to_id(CALL): CALL, tokenizer.token_to_id(END_CALL): END_CALL}

    @property
    def reasoning(self) -> str:
        """Reasoning text emitted so far."""
        return self._reasoning.text()

    @property
    def content(self) -> str:
        """Content text emitted so far (tool-call blocks excluded)."""
        return self._content.text()

    def feed(self, token_id: int) -> list[Delta]:
        """Consumes one generated id.

        Args:
            token_id: the next id.

        Returns:
            The events this id completes (often one, sometimes none).
        """
        token_id = int(token_id)
        if self.tokenizer.is_special(token_id):
            return []  # as decode(skip_special_tokens=True)
        text = self._decoder.decode(self.tokenizer.token_bytes(token_id))
        # A tag counts only if it decoded cleanly, i.e. no broken character
        # was flushed in front of it; then the one-shot parser sees it too.
        tag = self._tags.get(token_id) if text == self._tags.get(token_id) else None
        return self._consume(text, tag)

    def finish(self) -> list[Delta]:
        """Ends the stream: flushes an incomplete character and reports an open tool call.

        Returns:
            The final events.
        """
        events = self._consume(self._decoder.decode(b"", final=True), None)
        if self._block is not None:
            events.append(Delta("tool_call", "".join(self._block),
                                error=f"tool call {self._blocks_seen}: no closing {END_CALL}"))
        return events

    def result(self) -> ParsedReply:
        """Returns the reply parsed from everything fed so far (as ``parse`` would)."""
        pending = self._decoder.getstate()[0].decode("utf-8", "replace")
        return parse_text("".join(self._pieces) + pending, self._starts_in_reasoning)

    def _consume(self, text: str, tag: str | None) -> list[Delta]:
        if not text:
            return []
        self._pieces.append(text)
        if self._mode == "start":
            if not text.lstrip("\n"):
                return []
            if tag == THINK:
                self._mode = "reasoning"
                return []
            self._mode = "reasoning" if self._starts_in_reasoning else "content"
        if tag == END_THINK:
            return self._end_think()
        if self._mode == "reasoning":
            return self._emit("reasoning", self._reasoning.push(text))
        return self._content_text(text, tag)

    def _content_text(self, text: str, tag: str | None) -> list[Delta]:
        if self._block is None:
            if tag == CALL:
                self._block = []
                return []
            return self._emit("content", self._content.push(text))
        if tag != END_CALL:
            self._block.append(text)
            return []
        raw, self._block = "".join(self._block), None
        call, error = parse_tool_call(raw, self._blocks_seen)
        self._blocks_seen += 1
        return [Delta("tool_call", raw, tool_call=call, error=error)]

    def _end_think(self) -> list[Delta]:
        events = []
        if self._mode == "content":
            # Content seen so far turns out to be reasoning (the README splits on
            # the *last* </think>): rebuild the reasoning from the raw text.
            if self._content.parts or self._blocks_seen or self._block is not None:
                events.append(Delta("retract"))
            text = "".join(self._pieces)
            old = self._reasoning.text()
            self._reasoning = _Channel()
            self._reasoning.push(_drop_think_open(text[: len(text) - len(END_THINK)]))
            events += self._emit("reasoning", self._reasoning.text()[len(old):])
        self._mode = "content"
        self._content, self._block, self._blocks_seen = _Channel(), None, 0
        return events

    @staticmethod
    def _emit(kind: str, text: str) -> list[Delta]:
        return [Delta(kind, text)] if text else []
