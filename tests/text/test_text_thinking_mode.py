"""chat.thinking_mode: the hard switch wins, otherwise the latest soft switch, default thinking."""

import pytest

from qwen3_jax.text import chat


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


@pytest.mark.parametrize("messages,enable,expected", [
    ([U("Hi")], True, True),                                   # default: thinking
    ([U("Hi")], False, False),                                 # hard switch
    ([U("Hi /no_think")], True, False),
    ([U("Hi /think")], True, True),
    ([U("a /no_think"), A("b"), U("c")], True, False),          # a flag persists over later turns
    ([U("a /no_think"), A("b"), U("c /think")], True, True),    # later /think re-enables
    ([U("a /think"), A("b"), U("c /no_think"), A("d"), U("e")], True, False),
    ([U("/think then /no_think")], True, False),               # last flag in a message wins
    ([U("/no_think then /think")], True, True),
    ([{"role": "system", "content": "Answer fast. /no_think"}, U("Hi")], True, False),
    ([{"role": "system", "content": "/no_think"}, U("Hi /think")], True, True),
    ([{"role": "system", "content": "/think"}, U("Hi")], False, False),  # hard switch ignores flags
    ([U("please /think")], False, False),
    ([U("a /no_think"), A("b /think")], True, False),            # assistant text is not a switch
    ([U("a /no_think"), {"role": "tool", "content": "/think"}], True, False),
    ([U("see http://x.org/think and /thinking")], True, True),    # not standalone flags
    ([U("see http://x.org/no_think")], True, True),
])
def test_thinking_mode(messages, enable, expected):
    assert chat.thinking_mode(messages, enable_thinking=enable) is expected
