"""Helpers shared by the post-training tests."""


def tiny_model(vocab_size: int, seed: int = 0, layers: int = 2, hidden: int = 64, **overrides):
    """A random float32 Qwen3 `Model` with a small vocabulary."""
    import qwen3_jax
    from qwen3_jax.config import Qwen3Config

    cfg = Qwen3Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      max_position_embeddings=512, tie_word_embeddings=True, name="test-tiny", **overrides)
    return qwen3_jax.Model(cfg, qwen3_jax.init_params(cfg, seed))
