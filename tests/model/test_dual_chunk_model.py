"""Dual Chunk Attention in the model: config parsing, prefill and decode through the engine.

The attention itself is checked against a per-pair reference in tests/ops; here: the config block
is read and written, a sequence that fits one chunk gives the plain model's logits, the chunked
prefill agrees with the masked form, and greedy decoding with the KV cache (both engine layouts)
picks the tokens that recomputing the whole sequence without a cache picks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.config import ConfigError, DualChunkAttention, Qwen3Config
from qwen3_jax.generate.engine import Engine
from qwen3_jax.testing import SMALL_DENSE

BASE = {**SMALL_DENSE, "num_hidden_layers": 2}
DCA = {"chunk_size": 16, "local_size": 4}  # s = 12: a 40-token sequence spans 4 chunks


def _model(dca, seed=0):
    cfg = Qwen3Config(**BASE, dual_chunk_attention_config=dca)
    params = qwen3_jax.init_params(cfg, seed=seed)
    # std 0.1 instead of 0.02, so that the logits are far from uniform and greedy picks are clear
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x if "norm" in jax.tree_util.keystr(p) else x * 5.0, params)
    return qwen3_jax.Model(cfg, params)


def test_config_reads_and_writes_the_block():
    hf = Qwen3Config(**BASE).to_hf_dict()
    hf["dual_chunk_attention_config"] = {"chunk_size": 262144, "local_size": 8192,
                                         "original_max_position_embeddings": 262144,
                                         "sparse_attention_enabled": True}
    cfg = Qwen3Config.from_hf_dict(hf)
    assert cfg.dual_chunk_attention_config == DualChunkAttention(262144, 8192, 262144)
    again = Qwen3Config.from_hf_dict(cfg.to_hf_dict())
    assert again.dual_chunk_attention_config == cfg.dual_chunk_attention_config
    assert Qwen3Config.from_dict(cfg.to_dict()) == cfg
    assert Qwen3Config.from_hf_dict(Qwen3Config(**BASE).to_hf_dict()).dual_chunk_attention_config is None
    with pytest.raises(ConfigError, match="lacks \\['local_size'\\]"):
        Qwen3Config.from_hf_dict({**hf, "dual_chunk_attention_config": {"chunk_size": 8}})
    with pytest.raises(ConfigError, match="chunk_size=8 must be larger than local_size=8"):
        Qwen3Config.from_hf_dict({**hf, "dual_chunk_attention_config": {"chunk_size": 8, "local_size": 8}})


def test_one_chunk_without_scaling_gives_the_plain_model():
    m = _model({"chunk_size": 64, "local_size": 8})  # s = 56 > 40 tokens
    plain = qwen3_jax.Model(Qwen3Config(**BASE), m.params)
    ids = jax.random.randint(jax.random.key(1), (2, 40), 0, BASE["vocab_size"])
    np.testing.assert_allclose(m.logits(ids), plain.logits(ids), atol=1e-4)


def test_chunked_prefill_equals_masked_form():
    m = _model(DCA)
    ids = jax.random.randint(jax.random.key(2), (2, 40), 0, BASE["vocab_size"])
    pos = jnp.broadcast_to(jnp.arange(40), (2, 40))  # explicit positions take the masked path
    chunked = m.logits(ids)
    np.testing.assert_allclose(chunked, m.logits(ids, positions=pos), atol=1e-4)
    plain = qwen3_jax.Model(Qwen3Config(**BASE), m.params).logits(ids)
    assert float(jnp.max(jnp.abs(chunked[:, 12:] - plain[:, 12:]))) > 1e-2  # DCA does change later tokens


@pytest.mark.parametrize("layout", ["split", "stacked"])
def test_greedy_decode_with_cache_equals_recomputing(layout):
    m = _model(DCA)
    prompt = [int(t) for t in np.random.default_rng(0).integers(0, BASE["vocab_size"], 20)]
    new = Engine(m, layout=layout).generate([prompt], max_new_tokens=20, stop_tokens=[]).tokens[0]
    # Recompute without a cache: the sequence so far, right-padded to 40 tokens (one program);
    # causal attention keeps the padding out of the last real position.
    seq = np.zeros((1, 40), np.int32)
    seq[0, :20] = prompt
    for n in range(20, 40):
        seq[0, n] = int(jnp.argmax(m.logits(seq, attention_mask=np.arange(40)[None] < n)[0, n - 1]))
    assert new == seq[0, 20:].tolist()


def test_length_factor_multiplies_queries_and_keys():
    """With original_max_position_embeddings = 8, a 40-token prefill scales q and k by f(40)."""
    m = _model(DCA)
    scaled = qwen3_jax.Model(Qwen3Config(**BASE, dual_chunk_attention_config={**DCA,
                                                                                "original_max_position_embeddings": 8}),
                             m.params)
    f = 0.1 * np.log(40 / 8) + 1.0
    # q_norm and k_norm act before RoPE and are linear in their weight: scaling both by f is the same
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x * f if any(n in jax.tree_util.keystr(p) for n in ("q_norm", "k_norm")) else x, m.params)
    ref = qwen3_jax.Model(m.config, params)
    ids = jax.random.randint(jax.random.key(3), (2, 40), 0, BASE["vocab_size"])
    out = scaled.logits(ids)
    np.testing.assert_allclose(out, ref.logits(ids), atol=1e-4)
    assert float(jnp.max(jnp.abs(out - m.logits(ids)))) > 1e-2


def test_greedy_decode_with_cache_applies_the_length_factor_per_step(monkeypatch):
    """With the length scaling on, cached decoding applies vLLM's factor (FACTS: token t carries
    f_t = sf(max(P, t + 1)) on its query and its key, the key keeping the factor of the step that
    wrote it): the engine's greedy tokens over 20 steps past a 20-token prompt (2 chunks of s = 12
    each way) equal recomputing each step without a cache where every token's rotary tables
    carry its own f_t, and differ from the unscaled model's."""
    from qwen3_jax.model import dual_chunk
    from qwen3_jax.ops.dual_chunk_attention import length_scale

    orig, P, L = 4, 20, 40  # sf(40) = 1.23: logits up to 1.5x
    scaled = _model({**DCA, "original_max_position_embeddings": orig})
    prompt = [int(t) for t in np.random.default_rng(1).integers(0, BASE["vocab_size"], P)]
    new = Engine(scaled, layout="split").generate([prompt], max_new_tokens=L - P, stop_tokens=[]).tokens[0]

    unscaled_cfg = Qwen3Config(**BASE, dual_chunk_attention_config=DCA)
    plain_inputs = dual_chunk.attention_inputs

    def per_token_factor(config, q_slots, kv_valid, positions, segment_ids, dtype, cached):
        cos, sin, inputs = plain_inputs(unscaled_cfg, q_slots, kv_valid, positions, segment_ids, jnp.float32, cached)
        pos = q_slots if positions is None else positions
        f = length_scale(jnp.maximum(P, pos + 1), orig)[None, :, :, None]  # [1, B, T, 1]
        return (cos * f).astype(dtype), (sin * f).astype(dtype), inputs

    def recompute(model):
        seq = np.zeros((1, L), np.int32)
        seq[0, :P] = prompt
        for n in range(P, L):
            seq[0, n] = int(jnp.argmax(model.logits(seq, attention_mask=np.arange(L)[None] < n)[0, n - 1]))
        return seq[0, P:].tolist()

    unscaled = recompute(qwen3_jax.Model(unscaled_cfg, scaled.params))
    monkeypatch.setattr(dual_chunk, "attention_inputs", per_token_factor)
    reference = recompute(qwen3_jax.Model(scaled.config, scaled.params))  # a fresh model: traced with the patch
    assert new == reference
    assert new != unscaled  # the factor changes the picks, so the equality above tests it
