"""The Qwen3 chat format: render prompts, pick the thinking mode, parse replies.

Usage::

    from qwen3_jax.text import chat
    prompt = chat.render(messages, tools=None, enable_thinking=True, add_generation_prompt=True)
    thinking = chat.thinking_mode(messages, enable_thinking=True)   # picks the sampling preset
    reply = chat.parse(generated_ids, tokenizer=tok)                # reasoning, content, tool_calls

Rendering lives in ``render.py``, parsing in ``parse.py``; this module gathers
them and adds the soft-switch logic.
"""

from __future__ import annotations

import re
from typing import Sequence

from qwen3_jax.text.parse import Delta, ParsedReply, StreamParser, parse, parse_text
from qwen3_jax.text.render import ChatFormatError, render, validate
from qwen3_jax.text.template import QWEN3_CHAT_TEMPLATE, render_jinja

__all__ = [
    "ChatFormatError", "Delta", "ParsedReply", "QWEN3_CHAT_TEMPLATE", "StreamParser",
    "parse", "parse_text", "render", "render_jinja", "thinking_mode", "validate",
]

# The soft switches of the Qwen3 card. A flag must stand on its own: not part of
# a path or URL ("a/think"), nor a longer word ("/thinking").
_SWITCH = re.compile(r"(?<![\w/])/(no_)?think(?![\w/])")


def thinking_mode(messages: Sequence[dict], enable_thinking: bool = True) -> bool:
    """Says whether the model is asked to think, so generation can pick Qwen's sampling preset.

    ``enable_thinking=False`` (the hard switch) always wins: the template
    pre-fills an empty think block and the card says soft switches are then
    ignored. Otherwise the latest ``/think`` or ``/no_think`` in a user or system
    message decides (the model follows the most recent flag); thinking is the
    default.

    Args:
        messages: the conversation, as passed to ``render``.
        enable_thinking: the hard switch passed to ``render``.

    Returns:
        True for thinking mode, False for non-thinking mode.
    """
    if enable_thinking is False:
        return False
    mode = True
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if msg.get("role") in ("user", "system") and isinstance(content, str):
            flags = _SWITCH.findall(content)
            if flags:
                mode = flags[-1] != "no_"
    return mode
