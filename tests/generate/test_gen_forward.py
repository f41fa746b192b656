"""The engine's split forward (per-layer params, 2-D projections) computes the model's logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.generate.forward import Split, Stacked


@pytest.mark.parametrize("dtype, tol", [("bfloat16", 2e-2)])  # float32 is covered by the HF parity tests
def test_split_transposed_matches_stacked(dtype, tol):
    model = qwen3_jax.load("tiny-moe", dtype)  # untied: the LM head goes through the projection path too
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 150_000, (2, 7)), jnp.int32)
    mask = jnp.asarray([[1] * 7, [1] * 5 + [0] * 2], bool)
    write_at = jnp.zeros((2,), jnp.int32)
    logits = []
    for fwd in (Stacked(model.module), Split(model.module, transposed=True)):
        params = fwd.prepare(model.params)
        out = jax.jit(lambda p: fwd.apply(p, ids, mask, fwd.init_cache(2, 7), write_at, jnp.asarray([6, 4])))(params)
        logits.append(np.asarray(out.logits, np.float32))
        assert out.logits.shape == (2, 1, model.config.vocab_size)
    np.testing.assert_allclose(logits[1], logits[0], atol=tol * np.abs(logits[0]).max())
