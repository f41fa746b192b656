"""Every public name of `qwen3_jax` imports and is what the README promises."""

import qwen3_jax


def test_all_public_names_resolve():
    for name in qwen3_jax.__all__:
        assert getattr(qwen3_jax, name) is not None, name


def test_readme_entry_points_exist():
    assert callable(qwen3_jax.load) and callable(qwen3_jax.make_mesh)
    for method in ("logits", "generate", "chat", "chat_stream"):
        assert callable(getattr(qwen3_jax.Model, method)), method
    for fn in ("render", "parse", "thinking_mode"):
        assert callable(getattr(qwen3_jax.chat, fn)), fn
    assert callable(qwen3_jax.Tokenizer.qwen3) and callable(qwen3_jax.Tokenizer.from_pretrained)
