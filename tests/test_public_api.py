"""Every public name of `qwen3_jax` imports and is what the README promises."""

import types

import qwen3_jax
from qwen3_jax import losses, sharding
from qwen3_jax.sharding import placement


def test_all_public_names_resolve():
    # Every exported name is a function, class or constant, never a submodule that shadowed it
    # (only `chat` is meant to be a module: `qwen3_jax.chat.render(...)`).
    for name in qwen3_jax.__all__:
        value = getattr(qwen3_jax, name)
        assert isinstance(value, types.ModuleType) == (name == "chat"), (name, value)


def test_router_stats_is_the_loss_function_not_a_module():
    assert qwen3_jax.router_stats is losses.router_stats
    assert callable(qwen3_jax.router_statistics)


def test_sharding_helpers_live_in_sharding():
    for name in ("mesh_rules", "param_shardings", "shard_params", "mesh_context", "logical_axes"):
        assert getattr(placement, name).__module__ == "qwen3_jax.sharding.placement", name
    assert sharding.rules.mesh_axis_sizes(None) == {}  # no context mesh outside `jax.set_mesh`


def test_mesh_sizes_and_batch_axes_are_computed_only_in_sharding():
    # `sharding.rules` owns {axis: size} (mesh_axis_sizes) and the batch axes (batch_axes,
    # batch_multiple): elsewhere, neither `dict(zip(mesh.axis_names, ...))` nor a spelled-out batch axis list.
    import ast
    import pathlib

    root = pathlib.Path(qwen3_jax.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        if path.parent.name == "sharding":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            # dict(zip(mesh.axis_names, ...)): the {axis: size} of every axis that mesh_axis_sizes
            # gives (a filtered comprehension, e.g. the non-manual axes, is another quantity).
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict" and any(
                    isinstance(z, ast.Call) and getattr(z.func, "id", None) == "zip" and any(
                        isinstance(a, ast.Attribute) and a.attr == "axis_names" for a in z.args) for z in node.args):
                found.append(f"{path.relative_to(root)}:{node.lineno} dict(zip(axis_names))")
            if isinstance(node, (ast.Tuple, ast.List)) and [getattr(e, "value", None) for e in node.elts][:3] == [
                    "data", "fsdp", "expert"] and len(node.elts) == 3:
                found.append(f"{path.relative_to(root)}:{node.lineno} batch axes")
    assert found == []


def test_readme_entry_points_exist():
    assert callable(qwen3_jax.load) and callable(qwen3_jax.make_mesh)
    for method in ("logits", "generate", "chat", "chat_stream"):
        assert callable(getattr(qwen3_jax.Model, method)), method
    for fn in ("render", "parse", "thinking_mode"):
        assert callable(getattr(qwen3_jax.chat, fn)), fn
    assert callable(qwen3_jax.Tokenizer.qwen3) and callable(qwen3_jax.Tokenizer.from_pretrained)


def test_the_package_cites_only_public_sources():
    # FACTS.md / NOTES.md are the team's private notes: users of the package do not have them.
    import pathlib

    root = pathlib.Path(qwen3_jax.__file__).parent
    cited = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if any(w in p.read_text(encoding="utf-8") for w in ("FACTS", "NOTES.md", "shared/"))]
    assert cited == []
