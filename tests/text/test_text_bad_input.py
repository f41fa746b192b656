"""Bad input fails loudly, with a message naming the problem (index, role, path)."""

import json

import numpy as np
import pytest

from qwen3_jax.text import chat
from qwen3_jax.text.render import ChatFormatError
from qwen3_jax.text.tokenizer import Tokenizer, TokenizerFileError


def test_unknown_role():
    msgs = [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]
    with pytest.raises(ValueError, match=r"message 1 has unknown role 'robot'"):
        chat.render(msgs)


def test_missing_role():
    with pytest.raises(ChatFormatError, match=r"message 0 has unknown role None"):
        chat.render([{"content": "a"}])


@pytest.mark.parametrize("role", ["user", "system", "tool", "assistant"])
def test_message_without_content(role):
    msgs = [{"role": "user", "content": "a"}, {"role": role}]
    with pytest.raises(ChatFormatError, match=rf"message 1 \(role '{role}'\) has no content"):
        chat.render(msgs)


def test_assistant_with_tool_calls_needs_no_content():
    msgs = [{"role": "user", "content": "a"},
            {"role": "assistant", "tool_calls": [{"name": "f", "arguments": {}}]}]
    assert chat.render(msgs, add_generation_prompt=False).endswith(
        '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call><|im_end|>\n')


def test_non_string_content():
    with pytest.raises(ChatFormatError, match=r"message 0 \(role 'user'\): content must be a string"):
        chat.render([{"role": "user", "content": [{"type": "text", "text": "a"}]}])


def test_bad_tool_call():
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "",
                                               "tool_calls": [{"arguments": {}}]}]
    with pytest.raises(ChatFormatError, match=r"message 1 \(role 'assistant'\): tool call 0 has no name"):
        chat.render(msgs)
    msgs[1]["tool_calls"] = [{"name": "f", "arguments": {"x": object()}}]
    with pytest.raises(ChatFormatError, match=r"tool call 0 arguments is not JSON-serialisable"):
        chat.render(msgs)


def test_tools_not_json_serialisable():
    tools = [{"type": "function", "function": {"name": "ok"}}, {"name": "bad", "default": {1, 2}}]
    with pytest.raises(ChatFormatError, match=r"tool 1 is not JSON-serialisable"):
        chat.render([{"role": "user", "content": "a"}], tools=tools)


def test_empty_or_wrong_messages():
    with pytest.raises(ChatFormatError, match="empty"):
        chat.render([])
    with pytest.raises(ChatFormatError, match="list of dicts"):
        chat.render("hello")
    with pytest.raises(ChatFormatError, match="message 0 is a str"):
        chat.render(["hello"])


def test_jinja_path_validates_too(tok):
    with pytest.raises(ChatFormatError, match="unknown role 'robot'"):
        tok.apply_chat_template([{"role": "robot", "content": "x"}])


def test_missing_checkpoint_dir(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        Tokenizer.from_pretrained(missing)


def test_missing_tokenizer_json(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=rf"no tokenizer.json in {tmp_path}"):
        Tokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("payload", ["{not json", '{"model": {"type": "BPE"}}', "", "[1, 2]"])
def test_corrupt_tokenizer_json(tmp_path, payload):
    path = tmp_path / "tokenizer.json"
    path.write_text(payload)
    with pytest.raises(TokenizerFileError, match=rf"{path}: not a valid tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)


def test_corrupt_tokenizer_config(saved_dir, tmp_path):
    (tmp_path / "tokenizer.json").write_bytes((saved_dir / "tokenizer.json").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text("{oops")
    with pytest.raises(TokenizerFileError, match="tokenizer_config.json: not valid JSON"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(["a list"]))
    with pytest.raises(ValueError, match="expected a JSON object"):
        Tokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("tools", ["abc", b"abc", {"name": "f"}, 3, ["abc"], [None]])
def test_tools_must_be_a_list_of_dicts(tools):
    with pytest.raises(ChatFormatError, match="tool"):
        chat.render([{"role": "user", "content": "hi"}], tools=tools)


@pytest.mark.parametrize("ids, message", [
    ([1, 2.0], "item 1 is 2.0"), ([1, -1], "token id -1 is outside"), ([151_700], "token id 151700 is outside"),
    ("12", "got a str"), ([True], "item 0 is True"), (np.array([1.5]), "dtype float64"),
])
def test_decode_refuses_bad_ids(tok, ids, message):
    with pytest.raises(ValueError, match=message):
        tok.decode(ids)
    with pytest.raises(ValueError, match=message):
        tok.decode_batch([[1], ids])


def test_decode_accepts_numpy_and_generators(tok):
    ids = tok.encode("hello world")
    assert tok.decode(np.array(ids, np.int64)) == tok.decode(iter(ids)) == "hello world"
