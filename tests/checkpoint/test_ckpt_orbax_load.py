"""`qwen3_jax.load(orbax_dir, mesh=...)` restores straight into the sharded layout, with HF's logits."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import qwen3_jax
import torch
from ckpt_helpers import IDS, bits, hf_logits, make_hf_dir, read_all
from qwen3_jax.checkpoint import orbax_io
from qwen3_jax.checkpoint.convert import convert
from qwen3_jax.checkpoint.export import export
from qwen3_jax.sharding.placement import param_shardings
from qwen3_jax.sharding.mesh import make_mesh

MESHES = {"dense": "data=2,tensor=4", "moe": "expert=4,tensor=2"}


@pytest.fixture(scope="module", params=["dense", "moe"])
def converted(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    model = make_hf_dir(root / "hf", kind=request.param)
    convert(root / "hf", root / "orbax", progress=False)
    return request.param, model, root


def _leaves(tree):
    return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_unsharded_load_matches_transformers(converted):
    _, model, root = converted
    assert orbax_io.is_orbax_dir(root / "orbax") and not orbax_io.is_orbax_dir(root / "hf")
    ours = qwen3_jax.load(root / "orbax")
    assert ours.config.num_experts == getattr(model.config, "num_experts", 0)
    np.testing.assert_allclose(np.asarray(ours.logits(IDS)), hf_logits(model), atol=1e-4, rtol=0)


def test_sharded_load_has_the_rule_shardings_and_the_same_logits(converted):
    kind, _, root = converted
    mesh = make_mesh(MESHES[kind])
    sharded = qwen3_jax.load(root / "orbax", mesh=mesh)
    want = _leaves(param_shardings(sharded.config, mesh))
    got = _leaves(sharded.params)
    assert got.keys() == want.keys()
    split = 0
    for k, arr in got.items():
        assert arr.sharding.is_equivalent_to(want[k], arr.ndim), (k, arr.sharding, want[k])
        split += any(ax is not None for ax in want[k].spec)
    assert split >= 5, "the mesh should actually split most params"
    # Each device holds only its slice: shard shapes are smaller than the array for split params.
    q = sharded.params["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q.addressable_shards[0].data.shape != q.shape
    plain = qwen3_jax.load(root / "orbax")
    np.testing.assert_allclose(np.asarray(sharded.logits(IDS)), np.asarray(plain.logits(IDS)), atol=1e-5, rtol=0)


def test_restore_casts_to_the_requested_dtype(converted):
    _, _, root = converted
    model = qwen3_jax.load(root / "orbax", dtype="bfloat16")
    assert {str(x.dtype) for x in jax.tree.leaves(model.params)} == {"bfloat16"}


def test_convert_with_a_mesh_stores_the_same_values(converted, tmp_path):
    kind, _, root = converted
    mesh = make_mesh(MESHES[kind])
    convert(root / "hf", tmp_path / "sharded", mesh=mesh, progress=False)
    _, a = orbax_io.restore(root / "orbax")
    _, b = orbax_io.restore(tmp_path / "sharded", mesh=mesh)
    for (k, x), (_, y) in zip(sorted(_leaves(a).items()), sorted(_leaves(b).items())):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=k)
    # Sharded arrays export like unsharded ones.
    export(tmp_path / "sharded", tmp_path / "hf", progress=False)
    src, out = read_all(root / "hf"), read_all(tmp_path / "hf")
    assert sorted(src) == sorted(out) and all(torch.equal(bits(src[n]), bits(out[n])) for n in src)
