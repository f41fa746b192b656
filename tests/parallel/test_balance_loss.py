"""Global-batch load-balancing loss and router statistics.

The global-batch loss split over 4 data shards × 2 micro-batches (counts psum-ed across shards)
must equal the loss of the whole batch on one device, which for pooled layers is the reference's
`load_balancing_loss`; on a batch where every micro-batch prefers other experts the micro-batch
form must differ.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

import qwen3_jax
import qwen3_jax.testing
from qwen3_jax.losses import (RouterStats, balance_loss_term, global_batch_balance_loss, load_balancing_loss,
                              psum_router_stats, router_stats, sharded_balance_loss)
from qwen3_jax.router_metrics import collect_drops, router_statistics

L, B, T, E, K = 2, 8, 6, 8, 2


def _skewed_logits():
    """[L, B, T, E]: sequence b strongly prefers experts 2·(b mod 4) and 2·(b mod 4) + 1.

    Over the global batch every expert is used equally; within one sequence only two are.
    """
    noise = jax.random.normal(jax.random.key(0), (L, B, T, E))
    pref = jax.nn.one_hot(2 * (jnp.arange(B) % 4), E) + jax.nn.one_hot(2 * (jnp.arange(B) % 4) + 1, E)
    return noise + 4.0 * pref[None, :, None, :]


def _mesh4():
    return qwen3_jax.make_mesh("data=4", devices=jax.devices()[:4])


def _split_loss(logits):
    """4 data shards (shard_map) × 2 micro-batches each: global counts first, then per-micro-batch shares."""

    def shard(lg):  # lg [L, 2, T, E]: this shard's two micro-batches of one sequence each
        micro = [router_stats(lg[:, m:m + 1], K) for m in range(2)]
        local = micro[0] + micro[1]  # accumulated over micro-batches
        total = psum_router_stats(local, "data")  # then over data-parallel shards
        share = sum(global_batch_balance_loss(s, total) for s in micro)
        return jax.lax.psum(share, "data")

    return jax.shard_map(shard, mesh=_mesh4(), in_specs=P(None, "data"), out_specs=P())(logits)


def test_global_batch_loss_split_equals_whole_batch():
    logits = _skewed_logits()
    whole = lambda lg: global_batch_balance_loss(router_stats(lg, K))
    split = jax.jit(_split_loss)
    np.testing.assert_allclose(split(logits), whole(logits), rtol=1e-6)
    # Gradients with respect to every router logit agree too (each micro-batch's share is exact).
    # (A globally balanced batch has a zero gradient; tilt it towards expert 0 first.)
    tilted = logits + 2.0 * jax.nn.one_hot(0, E)
    g_split, g_whole = jax.jit(jax.grad(_split_loss))(tilted), jax.grad(whole)(tilted)
    assert float(jnp.max(jnp.abs(g_whole))) > 1e-3
    np.testing.assert_allclose(g_split, g_whole, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(g_whole))))


def test_whole_batch_loss_is_the_reference_formula():
    logits = _skewed_logits()
    ref = load_balancing_loss(logits, K)
    np.testing.assert_allclose(global_batch_balance_loss(router_stats(logits, K), per_layer=False), ref, rtol=1e-6)
    np.testing.assert_allclose(global_batch_balance_loss(router_stats(logits[:1], K)),
                               load_balancing_loss(logits[:1], K), rtol=1e-6)
    cfg = qwen3_jax.Qwen3Config(**{**qwen3_jax.testing.SMALL_MOE, "router_aux_loss_coef": 0.01})
    np.testing.assert_allclose(balance_loss_term(cfg, router_stats(logits, K)),
                               0.01 * global_batch_balance_loss(router_stats(logits, K)), rtol=1e-6)
    mask = (jnp.arange(T) < 4)[None, :].repeat(B, 0)
    np.testing.assert_allclose(global_batch_balance_loss(router_stats(logits, K, mask), per_layer=False),
                               load_balancing_loss(logits, K, mask), rtol=1e-6)


def test_micro_batch_loss_differs_on_skewed_batch():
    logits = _skewed_logits()
    global_loss = float(global_batch_balance_loss(router_stats(logits, K)))
    micro = float(np.mean([load_balancing_loss(logits[:, b:b + 1], K) for b in range(B)]))
    # Balanced overall (close to the uniform value k = 2), unbalanced in every micro-batch (~E/2·... >> k).
    assert abs(global_loss - K) < 0.3
    assert micro > 2.5 * global_loss


def test_sharded_loss_inside_shard_map():
    logits = _skewed_logits()
    fn = jax.shard_map(lambda lg: jax.lax.psum(sharded_balance_loss(lg, K, "data"), "data"), mesh=_mesh4(),
                       in_specs=P(None, "data"), out_specs=P())
    np.testing.assert_allclose(jax.jit(fn)(logits), global_batch_balance_loss(router_stats(logits, K)), rtol=1e-6)


def test_router_statistics_on_crafted_routing():
    logits = jnp.full((1, 4, 5, E), -3.0).at[..., 0].set(2.0).at[..., 1].set(1.0)
    inter = {"layers": {"mlp": {"dropped_copies": jnp.array([10]), "routed_copies": jnp.array([40])}}}
    s = router_statistics(logits, K, intermediates=inter)
    np.testing.assert_allclose(s["load_max"], [E * 0.5])
    np.testing.assert_allclose(s["load_min"], [0.0])
    np.testing.assert_allclose(s["idle_experts"], [6.0])
    np.testing.assert_allclose(s["load_entropy"], [np.log(2) / np.log(E)], rtol=1e-6)
    np.testing.assert_allclose(s["dropped_fraction"], [0.25])
    assert float(s["dropped_fraction_total"]) == 0.25
    assert collect_drops({"no": {}}) is None
    uniform = router_statistics(jnp.zeros((1, 2, 4, E)).at[..., :].add(jnp.arange(E) * 0.0), K)
    np.testing.assert_allclose(uniform["router_entropy"], [1.0], rtol=1e-6)


def test_router_stats_add_up():
    logits = _skewed_logits()
    a, b = router_stats(logits[:, :3], K), router_stats(logits[:, 3:], K)
    s = a + b
    assert isinstance(s, RouterStats)
    whole = router_stats(logits, K)
    np.testing.assert_allclose(s.counts, whole.counts)
    np.testing.assert_allclose(s.prob_sum, whole.prob_sum, rtol=1e-6)
    assert float(s.tokens) == B * T and float(s.counts.sum()) == L * B * T * K
