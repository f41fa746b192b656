"""Expert-parallel MoE against the single-device model, on 8 CPU devices.

Each check compares the mesh run with the one-device dropless model (itself tested against
transformers elsewhere): full-model logits and parameter gradients, the ragged dispatch (with
ragged_all_to_all emulated, as XLA:CPU lacks it), dropping under a small capacity, and the HLO.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qwen3_jax
from qwen3_jax.model.moe import MoE
from qwen3_jax.sharding.placement import mesh_context, shard_params
from qwen3_jax.model.transformer import Qwen3
from qwen3_jax.ops import moe as moe_ops
from qwen3_jax.ops.expert_parallel import expert_parallel_moe
from qwen3_jax.plan import hlo
from qwen3_jax.router_metrics import collect_drops
from qwen3_jax.testing import SMALL_MOE

CFG = qwen3_jax.Qwen3Config(**{**SMALL_MOE, "num_hidden_layers": 2})
IDS = jax.random.randint(jax.random.key(1), (4, 16), 0, CFG.vocab_size)
TARGET = jax.random.normal(jax.random.key(2), (4, 16, CFG.vocab_size))


def _params():
    p = qwen3_jax.init_params(CFG, seed=0)
    # Sharper routers than the N(0, 0.02) init, so that top-k choices are clear and varied.
    p["layers"]["mlp"]["gate"]["kernel"] = p["layers"]["mlp"]["gate"]["kernel"] * 50
    return p


def _loss_and_grad(params, mesh, impl="dense"):
    module = Qwen3(CFG, moe_impl=impl)

    def loss(p):
        out = module.apply({"params": p}, IDS)
        return jnp.mean(out.logits * TARGET), out.logits

    if mesh is not None:
        params = shard_params(params, CFG, mesh)
    with mesh_context(CFG, mesh):  # set_mesh must be entered outside jit
        return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


@pytest.fixture(scope="module")
def reference():
    params = _params()
    (_, logits), grads = _loss_and_grad(params, None)
    return params, logits, grads


def _rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


# The CPU default ("tiled") on one mesh; "dense" local experts elsewhere to save compile time (the
# dispatch is the same; the tiled path is also covered by the op-level tests below).
# The last two meshes have no expert axis: each device routes its own tokens (`ops.moe_sharded`).
@pytest.mark.parametrize("spec,impl", [("expert=8", "auto"), ("data=2,expert=4", "dense"),
                                       ("expert=4,tensor=2", "dense"), ("data=2,fsdp=2,tensor=2", "auto"),
                                       ("data=4,sequence=2", "dense")])
def test_logits_and_grads_match_single_device(reference, spec, impl):
    params, ref_logits, ref_grads = reference
    (_, logits), grads = _loss_and_grad(params, qwen3_jax.make_mesh(spec), impl)
    assert _rel(logits, ref_logits) < 1e-5
    flat_ref = dict(jax.tree_util.tree_leaves_with_path(ref_grads))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert _rel(g, flat_ref[path]) < 1e-5, jax.tree_util.keystr(path)
    # The experts' gradients are non-trivial (the test can fail).
    assert float(jnp.max(jnp.abs(flat_ref[next(p for p in flat_ref if "experts" in str(p))]))) > 0


def test_load_with_mesh_and_drop_report(tmp_path):
    """`load(dir, mesh=...)`: `logits` and greedy `generate` unchanged; zero drops reported when dropless."""
    from qwen3_jax.testing import write_hf_checkpoint

    write_hf_checkpoint(tmp_path, kind="moe", num_hidden_layers=2)
    ids = np.asarray(IDS[:2, :8])
    single = qwen3_jax.load(tmp_path)
    mesh = qwen3_jax.make_mesh("data=2,expert=4")
    model = qwen3_jax.load(tmp_path, mesh=mesh)
    assert _rel(model.logits(ids), single.logits(ids)) < 1e-5
    prompts = [[1, 2, 3], [4, 5]]
    assert model.generate(prompts, 4, stop_tokens=[]) == single.generate(prompts, 4, stop_tokens=[])

    with mesh_context(model.config, mesh):
        _, state = jax.jit(lambda p: model.module.apply({"params": p}, ids, mutable=["intermediates"]))(model.params)
    dropped, routed = collect_drops(state)
    assert dropped.shape == (2,) and int(dropped.sum()) == 0
    assert routed.tolist() == [ids.size * model.config.num_experts_per_tok] * 2


N, D, E, F, K = 64, 16, 8, 12, 2


def _op_inputs():
    k = jax.random.split(jax.random.key(3), 5)
    return (jax.random.normal(k[0], (N, D)), jax.random.normal(k[1], (N, E)) * 3,
            *(jax.random.normal(kk, s) * 0.3 for kk, s in zip(k[2:], [(E, D, F), (E, D, F), (E, F, D)])))


def _ep(dispatch, capacity_factor=None):
    def f(x, lg, wg, wu, wd):
        return expert_parallel_moe(x, lg, wg, wu, wd, top_k=K, norm_topk_prob=True,
                                   capacity_factor=capacity_factor, dispatch=dispatch)
    return f


def _reference(x, lg, wg, wu, wd, keep=None):
    w, ids = moe_ops.route(lg, K, True, x.dtype)
    if keep is not None:
        w = jnp.where(keep, w, 0)
    return moe_ops.sparse_moe(x, w, ids, wg, wu, wd, impl="dense")


def test_ragged_dispatch_emulated_matches_with_gradients():
    """The ragged path (offsets, local permutation, reverse exchange) with the primitive emulated."""
    args = _op_inputs()
    f = _ep("ragged_emulated")
    with jax.set_mesh(qwen3_jax.make_mesh("fsdp=2,expert=4")):
        y, dropped = jax.jit(f)(*args)
        g = jax.jit(jax.grad(lambda *a: jnp.sum(f(*a)[0] ** 2), argnums=(0, 1, 2, 4)))(*args)
    gr = jax.grad(lambda *a: jnp.sum(_reference(*a) ** 2), argnums=(0, 1, 2, 4))(*args)
    assert int(dropped) == 0 and _rel(y, _reference(*args)) < 1e-5
    for a, b in zip(g, gr):
        assert _rel(a, b) < 1e-5


def _overload_inputs():
    """Every token picks experts 0 (weight ~0.73) and 1: devices 0 and 1 of expert=8 get all copies."""
    x, _, wg, wu, wd = _op_inputs()
    lg = jnp.full((N, E), -5.0).at[:, 0].set(2.0).at[:, 1].set(1.0)
    return x, lg, wg, wu, wd


@pytest.mark.parametrize("dispatch", ["fixed", "ragged_emulated"])
def test_overload_drops_exactly_the_expected_copies(dispatch):
    args = _overload_inputs()
    cf, n = 1.0, N // 8  # 8 tokens per device, 16 copies, 8 to each of devices 0 and 1
    with jax.set_mesh(qwen3_jax.make_mesh("expert=8")):
        y, dropped = jax.jit(_ep(dispatch, cf))(*args)
    token = np.arange(N)
    if dispatch == "fixed":
        # C = ceil(1.0 · 8 · 2 / 8) = 2 rows per (sender, receiver): each device keeps the copies of
        # its first 2 tokens for expert 0 and for expert 1.
        keep_tok = (token % n) < 2
    else:
        # R = ceil(1.0 · 8 · 2) = 16 rows per receiver, filled in sender order: devices 0 and 1
        # accept all 8 + 8 copies of senders 0 and 1, nothing from the others.
        keep_tok = token < 2 * n
    keep = np.repeat(keep_tok[:, None], K, axis=1)
    assert int(dropped) == int((~keep).sum()) == 96
    assert _rel(y, _reference(*args, keep=jnp.asarray(keep))) < 1e-5
    # Dropped tokens get exactly zero (no residual here: this is the MoE output alone).
    assert float(jnp.max(jnp.abs(y[~keep_tok]))) == 0.0


def test_model_reports_drops_under_small_capacity(reference):
    params = shard_params(reference[0], CFG, qwen3_jax.make_mesh("expert=8"))
    mesh = qwen3_jax.make_mesh("expert=8")
    module = Qwen3(CFG, moe_capacity_factor=0.25)

    with mesh_context(CFG, mesh):
        out, state = jax.jit(lambda p: module.apply({"params": p}, IDS, mutable=["intermediates"]))(params)
    dropped, routed = collect_drops(state["intermediates"])
    assert dropped.shape == (CFG.num_hidden_layers,)
    assert int(dropped.min()) > 0 and int(dropped.max()) <= int(routed[0])
    assert _rel(out.logits, reference[1]) > 1e-3  # dropping changed the result: it is not silent


def _group_size(line: str) -> int:
    """Devices per replica group of an HLO collective (the three printed formats)."""
    m = re.search(r"replica_groups=\[(\d+),(\d+)\]", line)
    if m:
        return int(m.group(2))
    m = re.search(r"replica_groups=\{\{([^}]*)\}", line)
    if m:
        return len(m.group(1).split(","))
    m = re.search(r"replica_groups=mesh\[([^\]]*)\] \{([^}]*)\}", line)
    sizes = dict((a.strip("'"), int(b)) for a, b in (kv.split("=") for kv in m.group(1).split(",")))
    return int(np.prod([sizes[a.strip().strip("'")] for a in m.group(2).split(",")]))


def test_hlo_has_all_to_all_and_no_expert_weight_all_gather():
    mesh = qwen3_jax.make_mesh("fsdp=2,expert=4")
    moe = MoE(CFG)
    x = jax.random.normal(jax.random.key(0), (4, 16, CFG.hidden_size))
    with mesh_context(CFG, mesh):
        variables = jax.jit(moe.init)(jax.random.key(0), x)
        text = jax.jit(moe.apply).lower(variables, x).compile().as_text()
    # The fixed dispatch's three exchanges (token rows and their local expert ids out, results
    # back), all inside the expert-parallel layer.
    a2a = [op_name for kind, _, _, _, op_name in hlo.collectives(text)["instructions"] if kind == "all-to-all"]
    assert len(a2a) == 3 and all(op.endswith("shard_map/all_to_all") for op in a2a), a2a
    gathers = [l for l in text.splitlines() if re.search(r" all-gather(-start)?\(", l)]
    D, Fm = CFG.hidden_size, CFG.moe_intermediate_size
    full = {f"[{CFG.num_experts},{D},{Fm}]", f"[{CFG.num_experts},{Fm},{D}]"}
    # No gather ever materialises all experts' weights...
    assert not [l for l in gathers if any(f in l.split("all-gather")[0] for f in full)]
    # ...and inside the expert-parallel layer only the fsdp halves (groups of 2, devices {e, e+4}) of
    # the local experts are gathered, never over the expert axis (groups of 4).
    ep_gathers = [l for l in gathers if "shard_map" in l]
    assert len(ep_gathers) == 3 and all(_group_size(l) == 2 for l in ep_gathers), ep_gathers
    assert all("{0,4}" in l for l in ep_gathers if "replica_groups={{" in l)


def test_moe_without_expert_axis_routes_tokens_where_they_are():
    """On a data x fsdp mesh the layer sorts each device's own token copies (N·k/8 per device) and
    gathers only weights, where the unpartitioned global argsort sorted all N·k copies on every
    device (compiled for a v6e slice that took 97 GiB of temporaries per chip)."""
    mesh = qwen3_jax.make_mesh("data=4,fsdp=2")
    moe = MoE(CFG)
    B, T = 8, 64
    x = jax.random.normal(jax.random.key(0), (B, T, CFG.hidden_size))
    with mesh_context(CFG, mesh):
        variables = jax.jit(moe.init)(jax.random.key(0), x)
        text = jax.jit(moe.apply).lower(variables, x).compile().as_text()
    sorts = [int(m.group(1)) for m in re.finditer(r"= \(s32\[(\d+)\][^=]*\) sort\(", text)]
    local = B * T * CFG.num_experts_per_tok // 8
    assert sorts and max(sorts) == local, (sorts, local)
    shapes = [l.split(" all-gather")[0] for l in text.splitlines() if re.search(r" all-gather(-start)?\(", l)]
    D, Fm, E = CFG.hidden_size, CFG.moe_intermediate_size, CFG.num_experts
    weight_gathers = {f"[{E},{D},{Fm}]", f"[{E},{Fm},{D}]", f"[{D},{E}]"}  # experts, router
    assert all(any(w in s for w in weight_gathers) for s in shapes), shapes
    # ...and the result equals the one-device layer.
    ref = moe.apply(jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), variables), x)
    with mesh_context(CFG, mesh):
        out = jax.jit(moe.apply)(variables, x)
    assert _rel(out[0], ref[0]) < 1e-5
