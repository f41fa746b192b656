"""Greedy generation equals transformers' `generate(do_sample=False)` on random checkpoints.

The reference runs each prompt alone and unpadded; ours runs them as one padded batch, so this
also checks that padding, per-row positions and masks change nothing.
"""

import numpy as np
import pytest

import torch  # the parity reference: a missing torch must fail, not skip

import qwen3_jax  # noqa: E402
from qwen3_jax.generate import GREEDY, Engine  # noqa: E402
from qwen3_jax.testing import write_hf_checkpoint  # noqa: E402

NEW = 32
LENGTHS = (5, 11, 3)


def _prompts(seed, vocab=256):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, n).tolist() for n in LENGTHS]


def _reference(hf, prompts):
    out = []
    for p in prompts:
        with torch.no_grad():
            ids = hf.generate(torch.tensor([p]), max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                              eos_token_id=None, pad_token_id=0)
        out.append(ids[0, len(p):].tolist())
    return out


@pytest.fixture(scope="module", params=["dense", "moe"])
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"gen_{request.param}")
    hf = write_hf_checkpoint(path, request.param, seed=3)
    return request.param, path, hf, _reference(hf, _prompts(1))


# "split" is the CPU decode layout, "stacked" the one accelerators run: both against transformers.
@pytest.mark.parametrize("layout", ["split", "stacked"])
def test_greedy_batch_matches_transformers(checkpoint, layout):
    kind, path, hf, expected = checkpoint
    prompts = _prompts(1)
    engine = Engine(qwen3_jax.load(path), layout=layout)
    result = engine.generate(prompts, max_new_tokens=NEW, sampling=GREEDY, stop_tokens=[])
    assert [len(t) for t in result.tokens] == [NEW] * len(prompts)
    assert result.tokens == expected, kind
    assert result.finish_reasons == ["length"] * len(prompts)
