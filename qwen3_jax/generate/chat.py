"""Chat on top of the engine: render the conversation, pick the sampling preset, parse the reply.

    out = chat(model, [{"role": "user", "content": "Hi"}], thinking_budget=256)
    out.reasoning, out.content, out.tool_calls, out.usage
    for event in chat_stream(model, messages):       # ChatEvent: kind "reasoning" | "content" | ...
        print(event.text, end="")

The mode comes from `text.chat.thinking_mode` (the hard switch `enable_thinking`, else the latest
`/think` or `/no_think` in the conversation). The prompt is rendered in that mode, so a
`/no_think` conversation gets the template's empty think block, and the mode picks Qwen's preset
(`THINKING` or `NON_THINKING`) unless the caller gives a `Sampling`.

Streaming decodes a few tokens per compiled call (`Run.advance(chunk)`, the same on-device loop
with an earlier stop) and feeds them to `text.chat.StreamParser`; no host callback runs inside
the loop.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Iterator, Sequence

from qwen3_jax.generate.engine import Engine, ThinkingBudget
from qwen3_jax.generate.sampling import NON_THINKING, THINKING, Sampling

# Qwen3 technical report (arXiv 2505.09388) §4.3: inserted when the reasoning reaches the budget. The two
# newlines in front separate it from a thought cut mid-sentence (the Qwen docs' client does so too).
STOP_THINKING = ("Considering the limited time by the user, I have to give the solution based on the "
                 "thinking directly now.\n</think>.\n\n")
STOP_THINKING_PREFIX = "\n\n"
STREAM_CHUNK = 4


@dataclasses.dataclass(frozen=True)
class Usage:
    """Token counts of one chat call.

    Attributes:
      prompt_tokens: tokens of the rendered prompt.
      reasoning_tokens: generated tokens up to and including `</think>` (all of them while the
        reply is still thinking).
      content_tokens: generated tokens after `</think>`, the final stop token excluded.
    """

    prompt_tokens: int
    reasoning_tokens: int
    content_tokens: int

    @property
    def completion_tokens(self) -> int:
        """reasoning + content."""
        return self.reasoning_tokens + self.content_tokens


@dataclasses.dataclass(frozen=True)
class ChatResult:
    """A parsed reply.

    Attributes:
      reasoning, content: the two parts of the reply (think tags and tool-call blocks removed).
      tool_calls: parsed `{"name", "arguments"}` calls.
      errors: malformed tool-call blocks.
      usage: token counts.
      finish_reason: "stop" or "length".
      thinking: the mode the reply was generated in.
      sampling: the sampling setting used.
      prompt_ids, ids: the prompt and the generated ids.
    """

    reasoning: str
    content: str
    tool_calls: tuple
    errors: tuple
    usage: Usage
    finish_reason: str
    thinking: bool
    sampling: Sampling
    prompt_ids: tuple
    ids: tuple

    def to_dict(self) -> dict:
        """A JSON-ready dict (what `qwen3-jax generate --json` prints)."""
        return {"reasoning": self.reasoning, "content": self.content, "tool_calls": list(self.tool_calls),
                "errors": list(self.errors), "finish_reason": self.finish_reason, "thinking": self.thinking,
                "usage": {**dataclasses.asdict(self.usage), "completion_tokens": self.usage.completion_tokens},
                "sampling": dataclasses.asdict(self.sampling)}


@dataclasses.dataclass(frozen=True)
class ChatEvent:
    """One streaming event.

    Attributes:
      kind: "reasoning" / "content" (new text), "tool_call" (a block closed), "retract" (content
        so far was reasoning after all), or "done" (last event; `result` is set).
      text: new text.
      tool_call: the parsed call of a "tool_call" event.
      result: the full `ChatResult` on "done".
    """

    kind: str
    text: str = ""
    tool_call: dict | None = None
    result: ChatResult | None = None


def check_tokenizer_fits(tok, config) -> None:
    """Raises ValueError when the tokenizer has more ids than the model's embedding has rows."""
    if len(tok) > config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tok)} ids but the model's embedding only {config.vocab_size} "
                         "rows; put the matching tokenizer.json in the model directory (or pass tokenizer=...)")


def resolve_tokenizer(model, tokenizer=None):
    """The tokenizer to use: the argument, one attached to the model, else the built Qwen3 one.

    Raises ValueError when it does not fit the model's vocabulary (`check_tokenizer_fits`).
    """
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        from qwen3_jax.text.tokenizer import Tokenizer

        tok = Tokenizer.qwen3()
    if not (hasattr(tok, "apply_chat_template") and hasattr(tok, "__len__")):
        raise ValueError(f"tokenizer must be a qwen3_jax.Tokenizer, got {type(tok).__name__}")
    check_tokenizer_fits(tok, model.config)
    return tok


def check_sampling_names(overrides: dict) -> None:
    """Raises ValueError naming any keyword that is not a `Sampling` field."""
    fields = [f.name for f in dataclasses.fields(Sampling)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown argument {', '.join(f'{k}={overrides[k]!r:.40}' for k in unknown)}: the extra "
                         f"keywords are sampling fields ({', '.join(fields)})")


def choose_sampling(thinking: bool, sampling: Sampling | None = None, **overrides) -> Sampling:
    """The mode's preset, or `sampling` when given, with any non-None `overrides` applied.

    Warns when the result is greedy in thinking mode (Qwen: it degrades into repetition).
    """
    check_sampling_names(overrides)
    base = sampling if sampling is not None else (THINKING if thinking else NON_THINKING)
    changes = {k: v for k, v in overrides.items() if v is not None}
    out = base.replace(**changes) if changes else base
    if thinking and out.greedy:
        warnings.warn("greedy decoding in thinking mode: Qwen advises against it (it can degrade into endless "
                      "repetition); the thinking preset is temperature 0.6, top_p 0.95, top_k 20", stacklevel=3)
    return out


def prepare(model, messages: Sequence[dict], tools=None, enable_thinking: bool = True,
            thinking_budget: int | None = None, sampling: Sampling | None = None, tokenizer=None, **overrides):
    """Renders the prompt and settles mode, sampling and budget.

    Returns:
      (tokenizer, prompt ids, thinking mode, sampling, ThinkingBudget or None).
    """
    from qwen3_jax.text import chat as text_chat

    if not isinstance(enable_thinking, bool):
        raise ValueError(f"enable_thinking must be True or False, got {enable_thinking!r}")
    if thinking_budget is not None and (isinstance(thinking_budget, bool) or not isinstance(thinking_budget, int)
                                        or thinking_budget < 0):
        raise ValueError(f"thinking_budget must be an integer >= 0 or None, got {thinking_budget!r}")
    if sampling is not None and not isinstance(sampling, Sampling):
        raise ValueError(f"sampling must be a qwen3_jax.Sampling or None, got {type(sampling).__name__}")
    check_sampling_names(overrides)
    from qwen3_jax.text.render import validate

    validate(messages, tools)  # before the tokenizer is built, so the message names the real problem
    tok = resolve_tokenizer(model, tokenizer)
    thinking = text_chat.thinking_mode(messages, enable_thinking)
    ids = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True, enable_thinking=thinking,
                                  tokenize=True)
    chosen = choose_sampling(thinking, sampling, **overrides)
    budget = None
    if thinking_budget is not None:
        if int(thinking_budget) != thinking_budget or thinking_budget < 0:
            raise ValueError(f"thinking_budget must be an integer >= 0, got {thinking_budget}")
        budget = ThinkingBudget(int(thinking_budget), tuple(tok.encode(STOP_THINKING_PREFIX + STOP_THINKING)),
                                tok.think_id, tok.end_think_id)
    return tok, ids, thinking, chosen, budget


def _usage(tok, prompt_len: int, ids: Sequence[int], stops) -> Usage:
    ids = list(ids)
    end = len(ids) - 1 if ids and ids[-1] in stops else len(ids)
    if tok.end_think_id in ids[:end]:
        cut = end - ids[:end][::-1].index(tok.end_think_id)
    else:
        text = tok.decode(ids[:end], skip_special_tokens=True)
        cut = end if text.lstrip("\n").startswith("<think>") else 0
    return Usage(prompt_len, cut, end - cut)


def _result(tok, run, prompt, thinking, sampling) -> ChatResult:
    from qwen3_jax.text import chat as text_chat

    res = run.result()
    ids = res.tokens[0]
    parsed = text_chat.parse(ids, tokenizer=tok)
    return ChatResult(parsed.reasoning, parsed.content, tuple(parsed.tool_calls), tuple(parsed.errors),
                      _usage(tok, len(prompt), ids, set(run.spec.stop_tokens)), res.finish_reasons[0],
                      thinking, sampling, tuple(prompt), tuple(ids))


def _start(model, messages, tools, enable_thinking, thinking_budget, max_new_tokens, sampling, tokenizer,
           stop_tokens, engine, overrides):
    tok, prompt, thinking, chosen, budget = prepare(model, messages, tools, enable_thinking, thinking_budget,
                                                    sampling, tokenizer, **overrides)
    eng = engine or Engine.for_model(model)
    run = eng.start([prompt], max_new_tokens, chosen, stop_tokens, budget, tokenizer_size=len(tok),
                    model_dir=getattr(model, "source_dir", None))
    return tok, prompt, thinking, chosen, run


def chat(model, messages: Sequence[dict], *, tools: Sequence[dict] | None = None, enable_thinking: bool = True,
         thinking_budget: int | None = None, max_new_tokens: int = 4096, sampling: Sampling | None = None,
         tokenizer: Any = None, stop_tokens: Sequence[int] | None = None, engine: Engine | None = None,
         **overrides) -> ChatResult:
    """Generates one assistant reply.

    Args:
      model: a `qwen3_jax.Model`.
      messages: the conversation (`{"role", "content"}` dicts, as for the chat template).
      tools: optional tool schemas.
      enable_thinking: the hard switch; False renders the empty think block.
      thinking_budget: most reasoning tokens before the stop-thinking text is inserted.
      max_new_tokens: most generated tokens (reasoning + content).
      sampling: the setting; None picks THINKING or NON_THINKING from the mode.
      tokenizer: defaults to `model.tokenizer` when set, else `Tokenizer.qwen3()`.
      stop_tokens: None: the checkpoint's / Qwen's stop ids.
      engine: an `Engine` to reuse (default: the one cached on the model).
      **overrides: sampling fields (temperature=..., seed=...) applied on top; None leaves a field.

    Returns:
      The parsed reply with token usage.
    """
    tok, prompt, thinking, chosen, run = _start(model, messages, tools, enable_thinking, thinking_budget,
                                                max_new_tokens, sampling, tokenizer, stop_tokens, engine, overrides)
    run.advance()
    return _result(tok, run, prompt, thinking, chosen)


def chat_stream(model, messages: Sequence[dict], *, tools: Sequence[dict] | None = None,
                enable_thinking: bool = True, thinking_budget: int | None = None, max_new_tokens: int = 4096,
                sampling: Sampling | None = None, tokenizer: Any = None, stop_tokens: Sequence[int] | None = None,
                engine: Engine | None = None, chunk: int = STREAM_CHUNK, **overrides) -> Iterator[ChatEvent]:
    """Like `chat`, but yields text as it is generated (`chunk` tokens per compiled call).

    Yields:
      `ChatEvent`s; the last one has kind "done" and carries the `ChatResult`.
    """
    from qwen3_jax.text.chat import StreamParser

    tok, prompt, thinking, chosen, run = _start(model, messages, tools, enable_thinking, thinking_budget,
                                                max_new_tokens, sampling, tokenizer, stop_tokens, engine, overrides)
    parser = StreamParser(tok)
    fed = 0
    while True:
        ids = run.tokens()[0]
        for t in ids[fed:]:
            for d in parser.feed(t):
                yield ChatEvent(d.kind, d.text, d.tool_call)
        fed = len(ids)
        if run.finished:
            break
        run.advance(chunk)
    for d in parser.finish():
        yield ChatEvent(d.kind, d.text, d.tool_call)
    yield ChatEvent("done", result=_result(tok, run, prompt, thinking, chosen))
