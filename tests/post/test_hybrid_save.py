"""The hybrid-thinking recipe's HF writer: a directory `qwen3_jax.load` reads back with its tokenizer."""

import os
import sys

import jax
import numpy as np

import qwen3_jax
from qwen3_jax.config import Qwen3Config
from qwen3_jax.model.params import init_params
from qwen3_jax.post import arithmetic_data as D
from qwen3_jax.text.train_bpe import train_bpe

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "hybrid_thinking"))
import recipe  # noqa: E402


def test_save_hf_round_trip_carries_the_tokenizer(tmp_path):
    tok = train_bpe(D.pretraining_texts(200, seed=1), 300)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=tok.endoftext_id, eos_token_id=tok.im_end_id)
    params = jax.device_get(init_params(cfg, 3))
    recipe.save_hf(tmp_path / "m", cfg, params, tok)
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= set(
        os.listdir(tmp_path / "m"))
    model = qwen3_jax.load(str(tmp_path / "m"))
    assert model.tokenizer is not None and len(model.tokenizer) == len(tok)
    ids = np.asarray([tok.encode("What is 12 + 7?")], np.int32)
    want = qwen3_jax.Model(cfg, params).logits(ids)
    np.testing.assert_allclose(np.asarray(model.logits(ids)), np.asarray(want), rtol=1e-5, atol=1e-5)
    reply = model.chat([{"role": "user", "content": "What is 1 + 2?"}], max_new_tokens=4)  # no tokenizer passed
    assert reply.usage.prompt_tokens == len(tok.apply_chat_template(
        [{"role": "user", "content": "What is 1 + 2?"}], add_generation_prompt=True, tokenize=True))
