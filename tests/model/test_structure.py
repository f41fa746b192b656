"""Structure of the model: stacked params, logical axis names on every param and the rules that map
them to a mesh, remat that keeps values and gradients, sharded forward passes equal to one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import qwen3_jax
from qwen3_jax.sharding.placement import logical_axes, param_shardings
from qwen3_jax.model.transformer import Qwen3

SMALL_MOE = qwen3_jax.PRESETS["tiny-moe"].replace(vocab_size=512, num_hidden_layers=3, num_attention_heads=8,
                                                  num_key_value_heads=4, head_dim=16)
IDS = (np.arange(24).reshape(2, 12) * 37) % 512


def test_params_are_stacked_over_layers_and_experts():
    cfg = SMALL_MOE
    shapes = jax.tree.map(lambda x: x.shape, qwen3_jax.model.params.abstract_params(cfg))
    L, E, D, F = cfg.num_hidden_layers, cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size
    assert shapes["layers"]["mlp"]["experts"]["gate_proj"] == (L, E, D, F)
    assert shapes["layers"]["mlp"]["experts"]["down_proj"] == (L, E, F, D)
    assert shapes["layers"]["self_attn"]["q_proj"]["kernel"] == (L, D, cfg.num_attention_heads, cfg.head_dim)
    assert shapes["layers"]["self_attn"]["o_proj"]["kernel"] == (L, cfg.num_attention_heads, cfg.head_dim, D)
    assert shapes["lm_head"]["kernel"] == (D, cfg.vocab_size)


def test_every_param_has_logical_axis_names():
    specs = jax.tree_util.tree_leaves_with_path(logical_axes(SMALL_MOE), is_leaf=lambda x: isinstance(x, P))
    shapes = dict(jax.tree_util.tree_leaves_with_path(qwen3_jax.model.params.abstract_params(SMALL_MOE)))
    assert len(specs) == len(shapes)
    for path, spec in specs:
        assert len(spec) == len(shapes[path].shape) and all(isinstance(a, str) for a in spec), (path, spec)
    names = {jax.tree_util.keystr(p): s for p, s in specs}
    assert names["['layers']['self_attn']['q_proj']['kernel']"] == P("layers", "embed", "heads", "head_dim")
    assert names["['layers']['mlp']['experts']['gate_proj']"] == P("layers", "expert", "embed", "moe_mlp")
    assert names["['embed_tokens']['embedding']"] == P("vocab", "embed")


def test_rules_map_logical_axes_to_the_mesh():
    mesh = qwen3_jax.make_mesh("fsdp=2,tensor=4")
    sh = param_shardings(SMALL_MOE, mesh)
    assert sh["layers"]["self_attn"]["q_proj"]["kernel"].spec == P(None, "fsdp", "tensor", None)
    assert sh["layers"]["self_attn"]["k_proj"]["kernel"].spec == P(None, "fsdp", "tensor", None)
    assert sh["layers"]["mlp"]["experts"]["up_proj"].spec == P(None, None, "fsdp", "tensor")
    assert sh["embed_tokens"]["embedding"].spec == P("tensor", "fsdp")
    # 8-way tensor parallelism with 4 KV heads: KV heads are replicated, not split
    sh8 = param_shardings(SMALL_MOE, qwen3_jax.make_mesh("tensor=8"))
    assert sh8["layers"]["self_attn"]["k_proj"]["kernel"].spec == P(None, None, None, None)
    assert sh8["layers"]["self_attn"]["q_proj"]["kernel"].spec == P(None, None, "tensor", None)
    # any axis that a mesh split does not divide is replicated (20 is not a multiple of 8)
    odd = param_shardings(SMALL_MOE.replace(num_experts=6), qwen3_jax.make_mesh("fsdp=4,tensor=2"))
    assert odd["layers"]["mlp"]["experts"]["up_proj"].spec == P(None, None, "fsdp", "tensor")
    assert param_shardings(SMALL_MOE.replace(moe_intermediate_size=20), qwen3_jax.make_mesh("tensor=8"))[
        "layers"]["mlp"]["experts"]["up_proj"].spec == P(None, None, None, None)


def test_expert_meshes_shard_dense_weights_over_fsdp_and_expert():
    # dense weights are not replicated on every expert shard: their model dimension takes fsdp x expert
    sh = param_shardings(SMALL_MOE, qwen3_jax.make_mesh("fsdp=2,expert=4"))
    assert sh["layers"]["self_attn"]["q_proj"]["kernel"].spec == P(None, ("fsdp", "expert"), None, None)
    assert sh["embed_tokens"]["embedding"].spec == P(None, ("fsdp", "expert"))
    assert sh["layers"]["mlp"]["gate"]["kernel"].spec == P(None, ("fsdp", "expert"), None)
    # expert weights keep the expert axis for the experts and fall back to fsdp for the model dimension
    assert sh["layers"]["mlp"]["experts"]["up_proj"].spec == P(None, "expert", "fsdp", None)
    assert sh["layers"]["mlp"]["experts"]["down_proj"].spec == P(None, "expert", None, "fsdp")
    # a model dimension that fsdp x expert does not divide falls back to fsdp alone, not to replication
    odd = param_shardings(SMALL_MOE.replace(hidden_size=20), qwen3_jax.make_mesh("fsdp=2,expert=4"))
    assert odd["layers"]["self_attn"]["q_proj"]["kernel"].spec == P(None, "fsdp", None, None)


@pytest.mark.parametrize("spec", ["data=2,tensor=4", "fsdp=4,tensor=2", "tensor=8", "fsdp=2,expert=4"])
def test_sharded_forward_equals_one_device(spec):
    params = qwen3_jax.init_params(SMALL_MOE, seed=0)
    ref = qwen3_jax.Model(SMALL_MOE, params).logits(IDS)
    mesh = qwen3_jax.make_mesh(spec)
    model = qwen3_jax.Model(SMALL_MOE, qwen3_jax.sharding.placement.shard_params(params, SMALL_MOE, mesh), mesh=mesh)
    got = model.logits(IDS)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=2e-5, rtol=1e-5)


def test_constraints_reach_the_compiled_program():
    mesh = qwen3_jax.make_mesh("data=2,tensor=4")
    params = qwen3_jax.init_params(SMALL_MOE, seed=0, mesh=mesh)
    model = qwen3_jax.Model(SMALL_MOE, params, mesh=mesh)
    with qwen3_jax.sharding.placement.mesh_context(SMALL_MOE, mesh):
        hlo = model._forward.lower(params, jnp.asarray(IDS), None, None).as_text()
    assert hlo.count("sharding_constraint") + hlo.count("Sharding") > 0


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_keeps_values_and_gradients(remat):
    params = qwen3_jax.init_params(SMALL_MOE, seed=1)
    ids = jnp.asarray(IDS)

    def loss(p, policy):
        out = Qwen3(SMALL_MOE, remat=policy).apply({"params": p}, ids)
        logp = jax.nn.log_softmax(out.logits[:, :-1])
        return -jnp.mean(jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))

    l0, g0 = jax.jit(jax.value_and_grad(lambda p: loss(p, "none")))(params)
    l1, g1 = jax.jit(jax.value_and_grad(lambda p: loss(p, remat)))(params)
    np.testing.assert_allclose(float(l0), float(l1), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-5), g0, g1)
    assert float(jnp.max(jnp.abs(g0["layers"]["mlp"]["experts"]["gate_proj"]))) > 0


def test_mixed_layer_kinds_get_one_stack_per_run():
    cfg = SMALL_MOE.replace(num_hidden_layers=5, decoder_sparse_step=2, mlp_only_layers=(3,))
    p = qwen3_jax.model.params.abstract_params(cfg)
    # kinds: dense, moe, dense, dense, dense -> three runs of 1, 1 and 3 layers
    assert [k for k in p if k.startswith("layers")] == ["layers_0", "layers_1", "layers_2"]
    assert p["layers_2"]["mlp"]["gate_proj"]["kernel"].shape[0] == 3
    assert "experts" in p["layers_1"]["mlp"]


def test_unknown_remat_policy_is_refused():
    with pytest.raises(ValueError, match="unknown remat policy 'some'"):
        Qwen3(SMALL_MOE, remat="some").init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))


def test_float32_params_with_bfloat16_compute():
    params = qwen3_jax.init_params(SMALL_MOE, seed=2)  # float32 storage
    ref = qwen3_jax.Model(SMALL_MOE, params).logits(IDS)
    mixed = qwen3_jax.Model(SMALL_MOE, params, dtype="bfloat16", param_dtype="float32")
    out = mixed(IDS)
    assert out.logits.dtype == jnp.bfloat16 and mixed.module.param_dtype == jnp.float32
    rel = np.linalg.norm(np.asarray(out.logits, np.float32) - np.asarray(ref)) / np.linalg.norm(np.asarray(ref))
    assert rel < 2e-2, rel
