"""chat.render gives the Qwen3 template's prompts, byte for byte.

Each case is checked three ways: against its expected string (cases A-E, the Qwen3 model cards' examples, or
written by hand), against jinja2 rendering of the template (our
``apply_chat_template`` path), and against transformers' own
``apply_chat_template`` on a directory written by ``Tokenizer.save``.
"""

import copy
import json

import pytest

from qwen3_jax.text import chat, template
from qwen3_jax.text.tokenizer import Tokenizer

from text_chat_cases import CASES

IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name,messages,kwargs,expected", CASES, ids=IDS)
def test_render_expected(name, messages, kwargs, expected):
    assert chat.render(messages, **kwargs) == expected


@pytest.mark.parametrize("name,messages,kwargs,expected", CASES, ids=IDS)
def test_jinja_path_agrees(tok, name, messages, kwargs, expected):
    kwargs = {"add_generation_prompt": True, **kwargs}
    assert tok.apply_chat_template(messages, **kwargs) == expected
    assert template.render_jinja(template.QWEN3_CHAT_TEMPLATE, messages, **kwargs) == expected


@pytest.fixture(scope="module")
def hf_tokenizer(saved_dir):
    import transformers
    return transformers.AutoTokenizer.from_pretrained(str(saved_dir))


@pytest.mark.parametrize("name,messages,kwargs,expected", CASES, ids=IDS)
def test_transformers_agrees(hf_tokenizer, name, messages, kwargs, expected):
    kwargs = {"add_generation_prompt": True, **kwargs}
    # transformers may normalise messages in place; give it a copy.
    got = hf_tokenizer.apply_chat_template(copy.deepcopy(messages), tokenize=False, **kwargs)
    assert got == expected


def test_transformers_encodes_like_us(tok, hf_tokenizer):
    text = CASES[3][3]
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert len(hf_tokenizer) == len(tok)


def test_apply_chat_template_tokenize(tok):
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                  tokenize=True)
    assert ids[:2] == [151644, 872] and ids[-3:] == [151644, 77091, 198]  # <|im_start|>user ... assistant\n
    assert tok.decode(ids) == CASES[0][3]


def test_custom_checkpoint_template_is_honoured(tok, tmp_path):
    tok.save(tmp_path)
    cfg_path = tmp_path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["chat_template"] = ("{% for m in messages %}[{{ m.role }}]{{ m.content | tojson }}{% endfor %}"
                            "{% if add_generation_prompt %}[assistant]{% endif %}")
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    custom = Tokenizer.from_pretrained(tmp_path)
    got = custom.apply_chat_template([{"role": "user", "content": "<ü>"}], add_generation_prompt=True)
    assert got == '[user]"<ü>"[assistant]'  # our tojson does not HTML-escape


def test_template_raise_exception():
    with pytest.raises(template.TemplateError, match="no system"):
        template.render_jinja("{{ raise_exception('no system') }}", [])
    with pytest.raises(template.TemplateError, match="does not compile"):
        template.render_jinja("{% if %}", [])
