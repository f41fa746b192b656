"""The embedding lookup under FSDP runs on each device's own rows (8 simulated CPU devices).

FSDP splits the table [V, D] over its D dim. A lookup straight into that table gives the looked-up
rows split over D, and to hand the model rows split over the batch the partitioner makes every
device look up the tokens of the whole batch (and then reshuffles them with all-to-alls). `Embed`
gathers the table's D dim first, as FSDP does for every weight, so each device looks up only its
B / n rows, at full width, and nothing of the lookup travels between devices.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

import qwen3_jax
from qwen3_jax.model.layers import Embed
from qwen3_jax.plan import hlo
from qwen3_jax.sharding.placement import mesh_context, mesh_rules

from train_helpers import TINY_MODEL

V, D, B, T = 256, 32, 8, 40


def _compiled_lookup_grad(spec: str) -> str:
    cfg = qwen3_jax.Qwen3Config.from_dict({**TINY_MODEL, "vocab_size": V, "hidden_size": D})
    mesh = qwen3_jax.make_mesh(spec, devices=jax.devices()[:8])
    embed = Embed(V, D)
    ids = jax.ShapeDtypeStruct((B, T), jnp.int32)
    variables = jax.eval_shape(embed.init, jax.random.key(0), ids)
    rules = mesh_rules(cfg, mesh)
    param_sh = nn.logical_to_mesh_sharding(nn.get_partition_spec(variables), mesh, rules)["params"]
    params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          nn.unbox(variables)["params"], param_sh)
    ids = jax.ShapeDtypeStruct((B, T), jnp.int32,
                               sharding=nn.logical_to_mesh_sharding(P("batch", "length"), mesh, rules))

    def loss(p, i):  # as the model uses it: the lookup constrained to rows over the batch axes
        x = nn.with_logical_constraint(embed.apply({"params": p}, i), ("batch", "length", "act_embed"))
        return jnp.sum(x * x)

    with mesh_context(cfg, mesh):
        return jax.jit(jax.grad(loss)).lower(params, ids).compile().as_text()


def _lookups(text: str) -> list[tuple[int, ...]]:
    """Result shapes of the embedding's gather instructions in the compiled program."""
    out = []
    for line in text.splitlines():
        if " gather(" in line and "jit(_take)/gather" in line:
            dims = line.split("=", 1)[1].split("[", 1)[1].split("]", 1)[0]
            out.append(tuple(int(d) for d in dims.split(",")))
    return out


@pytest.mark.parametrize("spec", ["fsdp=8", "data=2,fsdp=4"])
def test_fsdp_lookup_stays_on_the_devices_rows(spec):
    text = _compiled_lookup_grad(spec)
    shapes = _lookups(text)
    assert shapes, "no embedding gather found in the compiled program"
    for s in shapes:  # [tokens, 1, D]: this device's B*T/8 tokens at full width, not all tokens at D/n
        assert s[0] == B * T // 8 and s[-1] == D, shapes
    moved = [i for i in hlo.collectives(text)["instructions"]
             if i[0] in ("all-to-all", "all-gather") and "jit(_take)" in i[4]]
    assert not moved, moved
