"""Sharded generation on 8 CPU devices gives the tokens of one device.

tests/conftest.py forces 8 host devices. The config has 8 query heads and 4 KV heads, so
`tensor=8` exceeds the KV heads (they are replicated) while `data=2,tensor=4` splits them.
"""

import jax
import numpy as np
import pytest

from qwen3_jax.api import Model
from qwen3_jax.config import Qwen3Config
from qwen3_jax.generate import Engine, Sampling
from qwen3_jax.model.params import init_params
from qwen3_jax.sharding.mesh import make_mesh

CFG = Qwen3Config(name="gen-sharded", vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=4, head_dim=16, max_position_embeddings=512)
PROMPTS = [[5, 9, 200, 31], [7] * 9, [1, 2, 3]]
SAMPLING = Sampling(temperature=0.8, top_k=20, top_p=0.9, seed=11)


@pytest.fixture(scope="module")
def reference():
    model = Model(CFG, init_params(CFG, seed=2))
    return Engine(model).generate(PROMPTS, max_new_tokens=16, sampling=SAMPLING, stop_tokens=[]).tokens


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")
@pytest.mark.parametrize("spec, layout", [("data=2,tensor=4", "split"), ("tensor=8", "split"),
                                          ("data=2,tensor=4", "stacked")])
def test_sharded_matches_single_device(spec, layout, reference):
    mesh = make_mesh(spec)
    model = Model(CFG, init_params(CFG, seed=2, mesh=mesh), mesh=mesh)
    k = model.params["layers"]["self_attn"]["k_proj"]["kernel"]
    assert len(k.sharding.device_set) == 8
    engine = Engine(model, layout=layout)
    run = engine.start(PROMPTS, max_new_tokens=16, sampling=SAMPLING, stop_tokens=[])
    cache = run.state["cache"]["layers"]
    cache = cache["k"] if layout == "stacked" else cache[0]["k"]
    if layout == "split":  # the per-layer [out, in] matrices keep the params' sharding
        def axes(spec):
            return {a for entry in spec if entry for a in ((entry,) if isinstance(entry, str) else entry)}
        w = engine.params["layers"]["0"]["self_attn"]["k_proj"]["w_t"]
        assert w.shape == (k.shape[2] * k.shape[3], k.shape[1])
        assert len(w.sharding.device_set) == 8 and axes(w.sharding.spec) == axes(k.sharding.spec[1:])
    # the cache follows the logical rules: batch over data, KV heads over tensor when they divide
    spec_str = str(cache.sharding.spec)
    if spec == "tensor=8":
        assert "tensor" not in spec_str
    else:
        assert "tensor" in spec_str and "data" in spec_str
    out = run.advance().result().tokens
    assert out == reference
