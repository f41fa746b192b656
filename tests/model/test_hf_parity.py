"""Parity with transformers (torch CPU) on random small checkpoints written by `save_pretrained`.

Float32: logits and the hidden states of every layer within 1e-4 (max abs). bfloat16: finite logits
within 2e-2 relative (Frobenius) error of the float32 reference on the same weights. The MoE aux loss
equals the reference's `load_balancing_loss_func` on the same router logits.
"""

import numpy as np
import pytest

import torch  # the parity reference: a missing torch must fail, not skip
import jax.numpy as jnp  # noqa: E402
from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func  # noqa: E402

import qwen3_jax  # noqa: E402
from qwen3_jax.testing import write_hf_checkpoint  # noqa: E402

CASES = {
    "dense_tied": dict(kind="dense", tie_word_embeddings=True),
    "dense_untied": dict(kind="dense", tie_word_embeddings=False),
    # head_dim equal to hidden / heads (the other cases use head_dim 32 != 64 / 4)
    "dense_plain_head_dim": dict(kind="dense", head_dim=16, num_key_value_heads=4),
    # YaRN (Qwen3's long-context recipe, at a small original context so it acts within 40 tokens)
    "dense_yarn": dict(kind="dense", max_position_embeddings=256, rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "rope_theta": 1e6}),
    "dense_linear_rope": dict(kind="dense", rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6}),
    "moe_norm_topk": dict(kind="moe", norm_topk_prob=True),
    "moe_no_norm_sparse_step": dict(kind="moe", norm_topk_prob=False, decoder_sparse_step=2,
                                    mlp_only_layers=[2], num_hidden_layers=5),
}


def _ids(batch=3, length=11, vocab=256, seed=0):
    return np.random.RandomState(seed).randint(0, vocab, (batch, length))


def _write_case(name, tmp_path_factory):
    spec = dict(CASES[name])
    kind = spec.pop("kind")
    path = tmp_path_factory.mktemp(name)
    return name, path, write_hf_checkpoint(path, kind=kind, seed=1, **spec)


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    return _write_case(request.param, tmp_path_factory)


@pytest.fixture(scope="module", params=[n for n in CASES if CASES[n]["kind"] == "moe"])
def moe_case(request, tmp_path_factory):
    return _write_case(request.param, tmp_path_factory)


def _hf_forward(hf, ids, mask=None, positions=None):
    kw = dict(output_hidden_states=True)
    if hasattr(hf.config, "num_experts") or hasattr(hf.config, "num_local_experts"):
        kw["output_router_logits"] = True
    with torch.no_grad():
        return hf(torch.tensor(ids), attention_mask=None if mask is None else torch.tensor(mask),
                  position_ids=None if positions is None else torch.tensor(positions), **kw)


def test_float32_logits_and_hidden_states(case):
    name, path, hf = case
    model = qwen3_jax.load(path, dtype="float32")
    ids = _ids()
    ref = _hf_forward(hf, ids)
    out = model(ids, return_hidden=True)
    np.testing.assert_allclose(np.asarray(out.logits), ref.logits.numpy(), atol=1e-4, rtol=0)
    assert len(out.hidden_states) == len(ref.hidden_states) == hf.config.num_hidden_layers + 1
    for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-4, rtol=0, err_msg=f"hidden state {i}")


def test_right_padded_batch(case):
    name, path, hf = case
    model = qwen3_jax.load(path, dtype="float32")
    ids = _ids(seed=2)
    mask = np.ones_like(ids)
    mask[0, 6:] = 0
    mask[2, 9:] = 0
    ref = _hf_forward(hf, ids, mask)
    got = np.asarray(model.logits(ids, attention_mask=mask))
    valid = mask.astype(bool)
    np.testing.assert_allclose(got[valid], ref.logits.numpy()[valid], atol=1e-4, rtol=0)
    # padding must not leak into the real tokens: the padded row equals the unpadded prompt alone
    alone = np.asarray(model.logits(ids[:1, :6]))
    np.testing.assert_allclose(got[0, :6], alone[0], atol=1e-5, rtol=0)


def test_explicit_positions(case):
    name, path, hf = case
    model = qwen3_jax.load(path, dtype="float32")
    ids = _ids(batch=2, length=6, seed=3)
    positions = np.array([[5, 6, 7, 8, 9, 10], [100, 101, 102, 103, 104, 205]])
    ref = _hf_forward(hf, ids, positions=positions)
    np.testing.assert_allclose(np.asarray(model.logits(ids, positions=positions)), ref.logits.numpy(),
                               atol=1e-4, rtol=0)


def test_moe_router_logits_and_aux_loss(moe_case):
    name, path, hf = moe_case
    model = qwen3_jax.load(path, dtype="float32")
    ids = _ids(seed=4)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    ref = _hf_forward(hf, ids, mask)
    out = model(ids, attention_mask=mask)
    n_moe = sum(model.config.is_moe_layer(i) for i in range(model.config.num_hidden_layers))
    assert out.router_logits.shape == (n_moe, 3, 11, model.config.num_experts) and len(ref.router_logits) == n_moe
    for ours, theirs in zip(out.router_logits, ref.router_logits):
        np.testing.assert_allclose(np.asarray(ours).reshape(-1, model.config.num_experts), theirs.numpy(),
                                   atol=1e-4, rtol=0)
    k, E = model.config.num_experts_per_tok, model.config.num_experts
    ours = float(qwen3_jax.load_balancing_loss(out.router_logits, k, jnp.asarray(mask)))
    np.testing.assert_allclose(ours, float(ref.aux_loss), rtol=1e-5)
    # the same router logits through both loss functions, without a mask as well
    same = tuple(torch.tensor(np.asarray(r).reshape(-1, E)) for r in out.router_logits)
    for m in (None, mask):
        theirs = float(load_balancing_loss_func(same, E, k, None if m is None else torch.tensor(m)))
        got = float(qwen3_jax.load_balancing_loss(out.router_logits, k, None if m is None else jnp.asarray(m)))
        np.testing.assert_allclose(got, theirs, rtol=1e-6)


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_bfloat16_close_to_float32_reference(kind, tmp_path):
    # std 0.05: with larger weights, bf16 rounding flips top-k routing choices in the reference too.
    hf = write_hf_checkpoint(tmp_path, kind=kind, seed=5, dtype="bfloat16", std=0.05)
    ids = _ids(seed=6)
    with torch.no_grad():
        hf_bf16 = hf(torch.tensor(ids)).logits.float().numpy()
    ref = _hf_forward(hf.float(), ids).logits.numpy()  # float32 compute on the same (bf16) weights
    model = qwen3_jax.load(tmp_path)  # "auto": the checkpoint's bfloat16
    assert model.dtype == jnp.bfloat16
    got = np.asarray(model.logits(ids))
    assert np.isfinite(got).all()
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert rel < 2e-2, rel
    # and no worse than the reference's own bfloat16 run, give or take rounding noise
    hf_rel = np.linalg.norm(hf_bf16 - ref) / np.linalg.norm(ref)
    assert rel < 1.5 * hf_rel + 1e-3, (rel, hf_rel)
