"""The Qwen3 chat format, rendered in plain Python.

Produces byte-for-byte what the hybrid Qwen3 jinja template (the ``chat_template`` of the checkpoints' tokenizer_config.json,
``template.QWEN3_CHAT_TEMPLATE``) produces, without jinja: it is faster, has no
sandbox to configure, and fails loudly on input the template would silently
mangle (unknown roles are skipped by the template, missing content becomes '').

The rules, in the template's order:

* System turn: with tools, one system turn holds the optional system text, a
  blank line, and the tools block (one ``json.dumps`` per tool). Without tools a
  leading system message is emitted as is. There is no default system prompt.
* "Last query": the last user message that is not just a wrapped tool response.
  Assistant turns up to it lose their reasoning (no thinking in history); turns
  after it (the current tool loop) keep ``<think>\\n...\\n</think>\\n\\n`` when
  they have reasoning, and the final message always gets the block.
* Tool calls follow the assistant text as ``<tool_call>`` JSON blocks; runs of
  ``tool`` messages are grouped into one user turn of ``<tool_response>`` blocks.
* The generation prompt opens an assistant turn; ``enable_thinking=False``
  pre-fills an empty think block so the model answers directly.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

ROLES = ("system", "user", "assistant", "tool")

TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)


class ChatFormatError(ValueError):
    """A conversation or tool list that cannot be rendered."""


def _dumps(value: Any, what: str) -> str:
    # ensure_ascii=False and default separators: exactly the template's tojson.
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ChatFormatError(f"{what} is not JSON-serialisable: {e}") from e


def validate(messages: Sequence[dict], tools: Sequence[dict] | None = None) -> None:
    """Checks a conversation before rendering.

    Args:
        messages: message dicts.
        tools: optional tool schemas.

    Raises:
        ChatFormatError: naming the message index and role (or tool index) at fault.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatFormatError("messages must be a list of dicts")
    if not messages:
        raise ChatFormatError("messages is empty")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ChatFormatError(f"message {i} is a {type(msg).__name__}, not a dict")
        role = msg.get("role")
        if role not in ROLES:
            raise ChatFormatError(f"message {i} has unknown role {role!r} (expected one of {ROLES})")
        content = msg.get("content")
        calls = msg.get("tool_calls")
        if content is None and not (role == "assistant" and calls):
            raise ChatFormatError(f"message {i} (role {role!r}) has no content")
        if content is not None and not isinstance(content, str):
            raise ChatFormatError(f"message {i} (role {role!r}): content must be a string, "
                                  f"got {type(content).__name__}")
        reasoning = msg.get("reasoning_content")
        if reasoning is not None and not isinstance(reasoning, str):
            raise ChatFormatError(f"message {i} (role {role!r}): reasoning_content must be a string")
        if calls:
            if role != "assistant":
                raise ChatFormatError(f"message {i} (role {role!r}): only assistant messages have tool_calls")
            for j, call in enumerate(calls):
                fn = _function(call) if isinstance(call, dict) else None
                where = f"message {i} (role 'assistant'): tool call {j}"
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise ChatFormatError(f"{where} has no name")
                if "arguments" not in fn:
                    raise ChatFormatError(f"{where} has no arguments")
                if not isinstance(fn["arguments"], str):
                    _dumps(fn["arguments"], f"{where} arguments")
    if tools is not None and (isinstance(tools, (str, bytes, dict)) or not isinstance(tools, Sequence)):
        raise ChatFormatError(f"tools must be a list of tool schemas (dicts), got a {type(tools).__name__}")
    for k, tool in enumerate(tools or ()):
        if not isinstance(tool, dict):
            raise ChatFormatError(f"tool {k} is a {type(tool).__name__}, not a dict (a tool schema)")
        _dumps(tool, f"tool {k}")


def _split_reasoning(msg: dict, content: str) -> tuple[str, str]:
    # An explicit reasoning_content wins; otherwise reasoning may be inline as
    # "<think>...</think>answer" (how a raw model reply is often stored).
    if isinstance(msg.get("reasoning_content"), str):
        return msg["reasoning_content"], content
    if "</think>" in content:
        before, _, _ = content.partition("</think>")
        reasoning = before.rstrip("\n").split("<think>")[-1].lstrip("\n")
        return reasoning, content.split("</think>")[-1].lstrip("\n")
    return "", content


def _last_query_index(messages: Sequence[dict]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        content = msg.get("content")
        if msg["role"] == "user" and isinstance(content, str) and not (
                content.startswith("<tool_response>") and content.endswith("</tool_response>")):
            return i
    # No real user query: every assistant turn counts as history.
    return len(messages) - 1


def _function(call: dict) -> Any:
    # OpenAI-style calls nest {"name", "arguments"} under "function"; the
    # template accepts both shapes (and uses the nested one when it is truthy).
    return call["function"] if call.get("function") else call


def _tool_call_text(call: dict) -> str:
    fn = _function(call)
    args = fn["arguments"]
    # A string is assumed to already be JSON (as the OpenAI API sends it).
    args_text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return '<tool_call>\n{"name": "' + fn["name"] + '", "arguments": ' + args_text + "}\n</tool_call>"


def render(messages: Sequence[dict], tools: Sequence[dict] | None = None,
           enable_thinking: bool = True, add_generation_prompt: bool = True) -> str:
    """Renders a conversation in the Qwen3 chat format.

    Args:
        messages: dicts with ``role`` (system/user/assistant/tool) and ``content``
            (a string; an assistant message with ``tool_calls`` may omit it).
            Assistant messages may carry ``reasoning_content`` and ``tool_calls``
            (``{"name", "arguments"}`` or ``{"type": "function", "function": {...}}``).
        tools: tool (function) schemas, rendered one JSON object per line.
        enable_thinking: False pre-fills an empty think block after the
            generation prompt (the hard switch to non-thinking mode).
        add_generation_prompt: end with ``<|im_start|>assistant\\n``.

    Returns:
        The prompt text.

    Raises:
        ChatFormatError: on invalid input (see ``validate``).
    """
    validate(messages, tools)
    out: list[str] = []
    first_is_system = messages[0]["role"] == "system"
    if tools:
        out.append("<|im_start|>system\n")
        if first_is_system:
            out.append(messages[0]["content"] + "\n\n")
        out.append(TOOLS_HEADER)
        for tool in tools:
            out.append("\n" + json.dumps(tool, ensure_ascii=False))
        out.append(TOOLS_FOOTER)
    elif first_is_system:
        out.append("<|im_start|>system\n" + messages[0]["content"] + "<|im_end|>\n")

    last_query = _last_query_index(messages)
    last = len(messages) - 1
    for i, msg in enumerate(messages):
        role = msg["role"]
        content = msg.get("content")
        content = content if isinstance(content, str) else ""
        if role == "user" or (role == "system" and i > 0):
            out.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
        elif role == "assistant":
            reasoning, content = _split_reasoning(msg, content)
            if i > last_query and (i == last or reasoning):
                out.append("<|im_start|>assistant\n<think>\n" + reasoning.strip("\n")
                           + "\n</think>\n\n" + content.lstrip("\n"))
            else:
                out.append("<|im_start|>assistant\n" + content)
            for j, call in enumerate(msg.get("tool_calls") or ()):
                # Newline separators: between calls, and after non-empty text.
                if j > 0 or content:
                    out.append("\n")
                out.append(_tool_call_text(call))
            out.append("<|im_end|>\n")
        elif role == "tool":
            if i == 0 or messages[i - 1]["role"] != "tool":
                out.append("<|im_start|>user")
            out.append("\n<tool_response>\n" + content + "\n</tool_response>")
            if i == last or messages[i + 1]["role"] != "tool":
                out.append("<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
        # Only an explicit False switches thinking off, as in the template.
        if enable_thinking is False:
            out.append("<think>\n\n</think>\n\n")
    return "".join(out)
