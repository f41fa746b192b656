"""Parsing replies: one-shot (ids or text), tool calls, and the streaming parser.

The streaming parser is checked against the one-shot parser on every prefix of
a set of outputs, including characters split over several tokens.
"""

import pytest

from qwen3_jax.text import chat
from qwen3_jax.text.parse import ParsedReply

CALL_A = '<tool_call>\n{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}\n</tool_call>'
CALL_B = '<tool_call>\n{"name": "search", "arguments": {"q": "渋谷 ☕", "n": 3}}\n</tool_call>'

OUTPUTS = [
    "<think>\nThe user greets me.\n</think>\n\nHello! 😀<|im_end|>",
    "<think>\n\n</think>\n\nDirect answer.<|im_end|>",
    "No think block at all.\n\n<|im_end|>",
    "<think>\nNeed the time.\n</think>\n\n" + CALL_A + "<|im_end|>",
    "<think>\nTwo calls.\n</think>\n\nLet me check.\n" + CALL_A + "\n" + CALL_B + "<|im_end|>",
    "<think>\nbroken\n</think>\n\n<tool_call>\n{\"name\": \"f\", \"arguments\": {oops}\n</tool_call>\nafter",
    "<think>\nstill thinking about 数学 and 👨‍👩‍👧 when cut",
    "<think>\na</think>b</think>\n\nc",                                   # last </think> wins
    "\n\n<think>\n中文推理 🇫🇷\n\n</think>\n\n答案：四。\n\n\n",
    "text </tool_call> stray then " + CALL_A + " tail <think> not a tag",
    "<think>x</think>\n\n<tool_call>\n{\"name\": \"f\"",                 # unterminated call
    "😀😀" + "\U0001F9D1\u200D\U0001F4BB" + "é" * 3,
]


def test_readme_split(tok):
    ids = tok.encode("<think>\nr1\nr2\n</think>\n\nthe answer\n<|im_end|>")
    reply = chat.parse(ids, tokenizer=tok)
    assert reply == ParsedReply("r1\nr2", "the answer", (), ())
    # Same cut as the README: last id 151668, decode both halves, strip newlines.
    cut = len(ids) - ids[::-1].index(151668)
    head = tok.decode(ids[:cut], skip_special_tokens=True).strip("\n")
    assert head == "<think>\nr1\nr2\n</think>"
    assert tok.decode(ids[cut:], skip_special_tokens=True).strip("\n") == reply.content


def test_parse_text_and_ids_agree(tok):
    for text in OUTPUTS:
        assert chat.parse(text.replace("<|im_end|>", "")) == chat.parse(tok.encode(text), tokenizer=tok)


def test_tool_calls(tok):
    reply = chat.parse(OUTPUTS[4].removesuffix("<|im_end|>"))
    assert reply.reasoning == "Two calls."
    assert reply.content == "Let me check."
    assert reply.tool_calls == ({"name": "get_time", "arguments": {"tz": "Europe/Paris"}},
                                {"name": "search", "arguments": {"q": "渋谷 ☕", "n": 3}})
    assert reply.errors == ()


def test_malformed_tool_call_is_reported_not_raised():
    reply = chat.parse(OUTPUTS[5])
    assert reply.tool_calls == ()
    assert len(reply.errors) == 1 and "tool call 0" in reply.errors[0] and "invalid JSON" in reply.errors[0]
    assert reply.content == "after"
    reply = chat.parse(OUTPUTS[10])
    assert reply.errors == ("tool call 0: no closing </tool_call>",)
    reply = chat.parse('<tool_call>["not", "an object"]</tool_call>')
    assert 'string "name"' in reply.errors[0]


def test_unfinished_thinking_is_reasoning():
    reply = chat.parse(OUTPUTS[6])
    assert reply.content == "" and reply.reasoning.startswith("still thinking")


def test_starts_in_reasoning():
    # A 2507-style prompt opened <think>; the reply only closes it.
    reply = chat.parse("plan\n</think>\n\nanswer", starts_in_reasoning=True)
    assert (reply.reasoning, reply.content) == ("plan", "answer")
    assert chat.parse("plan so far", starts_in_reasoning=True).reasoning == "plan so far"


def test_parse_ids_needs_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        chat.parse([1, 2, 3])


def _split_bytes_ids(tok, text):
    """Ids for text where multi-byte characters are spelled byte by byte (one token per byte)."""
    ids = []
    for piece in tok.encode_batch([text])[0]:
        raw = tok.token_bytes(piece)
        if piece < 151643 and len(raw) > 1 and any(b >= 0x80 for b in raw):
            byte_ids = {tok.token_bytes(i): i for i in range(256)}  # single-byte tokens
            ids.extend(byte_ids[bytes([b])] for b in raw)
        else:
            ids.append(piece)
    return ids


def _check_stream(tok, ids, starts_in_reasoning=False):
    sp = chat.StreamParser(tok, starts_in_reasoning=starts_in_reasoning)
    got = {"reasoning": "", "content": ""}
    calls = []
    for k, token_id in enumerate(ids, 1):
        for d in sp.feed(token_id):
            if d.kind == "retract":
                got["content"], calls = "", []
            elif d.kind == "tool_call":
                calls.append(d.tool_call) if d.tool_call is not None else None
            else:
                got[d.kind] += d.text
        one_shot = chat.parse(ids[:k], tokenizer=tok, starts_in_reasoning=starts_in_reasoning)
        assert sp.result() == one_shot
        assert (sp.reasoning, sp.content) == (got["reasoning"], got["content"])
        assert tuple(calls) == one_shot.tool_calls
        if tok.decode(ids[:k]).endswith("\ufffd"):
            # A character is incomplete: the stream holds it back.
            assert one_shot.reasoning.startswith(got["reasoning"])
            assert one_shot.content.startswith(got["content"])
            assert "\ufffd" not in got["reasoning"] + got["content"]
        else:
            assert got["reasoning"] == one_shot.reasoning
            assert got["content"] == one_shot.content
    final = sp.finish()
    assert sp.result() == chat.parse(ids, tokenizer=tok, starts_in_reasoning=starts_in_reasoning)
    return final


@pytest.mark.parametrize("index", range(len(OUTPUTS)))
def test_stream_agrees_on_every_prefix(tok, index):
    _check_stream(tok, tok.encode(OUTPUTS[index]))


@pytest.mark.parametrize("index", range(len(OUTPUTS)))
def test_stream_with_characters_split_over_tokens(tok, index):
    ids = _split_bytes_ids(tok, OUTPUTS[index])
    assert tok.decode(ids) == OUTPUTS[index]
    _check_stream(tok, ids)


def test_stream_starts_in_reasoning(tok):
    _check_stream(tok, tok.encode("plan\n\n</think>\n\nanswer " + CALL_A), starts_in_reasoning=True)


def test_stream_emits_only_complete_characters(tok):
    ids = _split_bytes_ids(tok, "😀")
    assert len(ids) == 4
    sp = chat.StreamParser(tok)
    deltas = [sp.feed(i) for i in ids]
    assert deltas[:3] == [[], [], []]
    assert [(d.kind, d.text) for d in deltas[3]] == [("content", "😀")]


def test_stream_finish_reports_open_tool_call_and_broken_tail(tok):
    sp = chat.StreamParser(tok)
    for i in tok.encode(OUTPUTS[10]):
        sp.feed(i)
    final = sp.finish()
    assert [d.error for d in final] == ["tool call 0: no closing </tool_call>"]
    sp = chat.StreamParser(tok)
    for i in _split_bytes_ids(tok, "ok😀")[:-1]:  # cut inside the emoji
        sp.feed(i)
    assert [(d.kind, d.text) for d in sp.finish()] == [("content", "\ufffd")]
    assert sp.content == "ok\ufffd"


def test_stream_tool_call_events(tok):
    sp = chat.StreamParser(tok)
    events = [d for i in tok.encode(OUTPUTS[5]) for d in sp.feed(i)]
    calls = [d for d in events if d.kind == "tool_call"]
    assert len(calls) == 1 and calls[0].tool_call is None and "invalid JSON" in calls[0].error


def test_stream_retracts_content_on_later_end_think(tok):
    sp = chat.StreamParser(tok)
    events = [d for i in tok.encode(OUTPUTS[7]) for d in sp.feed(i)]
    kinds = [d.kind for d in events]
    assert "retract" in kinds
    assert sp.reasoning == "a</think>b" and sp.content == "c"
