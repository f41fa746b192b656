"""The Qwen3 chat template (jinja) and a sandboxed renderer for checkpoint templates.

``QWEN3_CHAT_TEMPLATE`` is the ``chat_template`` string of the hybrid-thinking
Qwen3 checkpoints, written into ``tokenizer_config.json`` by
``Tokenizer.save`` so that other tools (transformers, vLLM) render prompts the
same way we do.

``render_jinja`` renders any such template the way transformers does: an
``ImmutableSandboxedEnvironment`` (templates come from downloaded files and must
not reach Python internals), ``trim_blocks`` and ``lstrip_blocks`` (the template
is indented for readability and relies on these to drop that whitespace), a
``tojson`` filter that is plain ``json.dumps(..., ensure_ascii=False)`` (jinja's
own ``tojson`` HTML-escapes ``<``, ``>`` and ``&``, which would change the
prompt), and a ``raise_exception`` global for templates that validate input.
Our own Python renderer (``render.py``) is the default path; this one exists so
that a checkpoint's own template is honoured, and tests check both agree.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Sequence

# Verbatim; raw string so the template's own escapes (\n inside quotes) stay as
# written. Real line breaks are part of the template and removed by trim_blocks.
QWEN3_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""


class TemplateError(ValueError):
    """Raised when a chat template fails to compile or calls ``raise_exception``."""


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Sequence[str] | None = None, sort_keys: bool = False) -> str:
    # Same keyword surface as transformers' filter, defaulting to what it emits.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise TemplateError(message)


@functools.lru_cache(maxsize=8)
def _compile(template: str):
    # jinja2 is imported lazily: only the checkpoint-template path needs it.
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"chat template does not compile: {e} (line {e.lineno})") from e


def render_jinja(template: str, messages: Sequence[dict], tools: Sequence[dict] | None = None,
                 add_generation_prompt: bool = False, **kwargs: Any) -> str:
    """Renders a chat template with jinja2, as transformers' ``apply_chat_template`` does.

    Args:
        template: the jinja source, e.g. ``QWEN3_CHAT_TEMPLATE`` or a checkpoint's.
        messages: list of message dicts (``role``, ``content``, ...).
        tools: optional list of tool (function) schemas.
        add_generation_prompt: append the opening of an assistant turn.
        **kwargs: extra template variables, e.g. ``enable_thinking=False``.

    Returns:
        The rendered prompt string.

    Raises:
        TemplateError: if the template does not compile or raises.
    """
    compiled = _compile(template)
    return compiled.render(messages=list(messages), tools=tools,
                           add_generation_prompt=add_generation_prompt, **kwargs)
