"""The chunked cross-entropy equals the plain one (values and gradients), targets respect document
boundaries, and a packed batch lets no information cross documents."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3_jax.config import Qwen3Config
from qwen3_jax.model.params import init_params
from qwen3_jax.model.transformer import Qwen3
from qwen3_jax.train.loss import chunked_cross_entropy, cross_entropy, next_token_targets

from train_helpers import TINY_MODEL, packed_batch


def test_next_token_targets_skip_boundaries_and_padding():
    tokens = jnp.array([[5, 6, 7, 8, 9, 0]])
    seg = jnp.array([[1, 1, 2, 2, 2, 0]])
    targets, w = next_token_targets(tokens, seg)
    np.testing.assert_array_equal(targets, [[6, 7, 8, 9, 0, 0]])
    # 5->6 counts; 6->7 crosses documents; 7->8, 8->9 count; 9->pad and the last slot do not.
    np.testing.assert_array_equal(w, [[1, 0, 1, 1, 0, 0]])
    _, w_plain = next_token_targets(tokens)
    np.testing.assert_array_equal(w_plain, [[1, 1, 1, 1, 1, 0]])


@pytest.mark.parametrize("layout,T,chunk", [("DV", 24, 8), ("VD", 24, 8), ("DV", 21, 8), ("VD", 24, 0)])
def test_chunked_equals_plain_values_and_gradients(layout, T, chunk):
    B, D, V = 3, 16, 50
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    hidden = jax.random.normal(k1, (B, T, D))
    head = jax.random.normal(k2, (D, V) if layout == "DV" else (V, D)) * 0.5
    tokens = jax.random.randint(k3, (B, T), 0, V)
    seg = jnp.where(jnp.arange(T)[None] < T // 2, 1, 2) * jnp.ones((B, 1), jnp.int32)
    targets, w = next_token_targets(tokens, seg)
    eq = "BTD,DV->BTV" if layout == "DV" else "BTD,VD->BTV"

    plain = lambda h, m: cross_entropy(jnp.einsum(eq, h, m), targets, w)
    chunked = lambda h, m: chunked_cross_entropy(h, m, targets, w, chunk, layout)
    np.testing.assert_allclose(chunked(hidden, head), plain(hidden, head), rtol=1e-6)
    g_plain = jax.grad(plain, argnums=(0, 1))(hidden, head)
    g_chunk = jax.grad(chunked, argnums=(0, 1))(hidden, head)
    for a, b in zip(g_chunk, g_plain):
        assert float(jnp.max(jnp.abs(b))) > 1e-3
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_chunked_never_builds_full_logits():
    """The jaxpr of value-and-grad holds no [B, T, V] array, only [B, chunk, V] blocks."""
    B, T, D, V, C = 2, 64, 8, 1000, 16
    h = jnp.ones((B, T, D))
    m = jnp.ones((D, V))
    t, w = next_token_targets(jnp.zeros((B, T), jnp.int32))
    f = jax.value_and_grad(lambda h, m: chunked_cross_entropy(h, m, t, w, C), argnums=(0, 1))
    text = str(jax.make_jaxpr(f)(h, m))
    assert f"{B},{C},{V}" in text
    assert f"{B},{T},{V}" not in text and f"{T // C},{B},{C},{V}" not in text


def test_packed_batch_has_no_cross_document_gradient():
    """The loss of a row's last document has zero gradient w.r.t. the embeddings of the earlier
    documents' tokens (which causal attention alone would let it see)."""
    cfg = Qwen3Config(**TINY_MODEL)
    params = init_params(cfg, seed=1)
    model = Qwen3(cfg)
    b = packed_batch(1, 32, cfg.vocab_size, seed=3, pad_tail=0)
    seg = jnp.asarray(b["segment_ids"])
    last = int(seg.max())
    assert last >= 2
    # Disjoint vocabularies, so embedding rows identify the document.
    raw = jnp.asarray(b["tokens"]) % 100
    tokens = jnp.where(seg == last, raw + 1, raw + 120)
    targets, w = next_token_targets(tokens, seg)
    w_last = w * (seg == last)

    def last_doc_loss(embedding, segment_ids, positions):
        p = {**params, "embed_tokens": {"embedding": embedding}}
        logits = model.apply({"params": p}, tokens, positions=positions, segment_ids=segment_ids).logits
        return cross_entropy(logits, targets, w_last)

    emb = params["embed_tokens"]["embedding"]
    earlier = np.unique(np.asarray(tokens)[np.asarray(seg) != last])
    own = np.unique(np.asarray(tokens)[np.asarray(seg) == last])
    g = jax.grad(last_doc_loss)(emb, seg, jnp.asarray(b["positions"]))
    assert float(jnp.abs(g[own]).max()) > 1e-4
    assert float(jnp.abs(g[earlier]).max()) == 0.0
    # Control: the same row as one document lets the earlier tokens in (the check can fail).
    g_leak = jax.grad(last_doc_loss)(emb, jnp.ones_like(seg), jnp.arange(32)[None])
    assert float(jnp.abs(g_leak[earlier]).max()) > 1e-6
