"""The flash kernels visit exactly the blocks that hold a visible pair, checked against brute force.

The kernels run a (query block, key block) step only inside the ranges `flash_common.block_ranges`
gives from `flash_common.needed_blocks` (forward and dq: key blocks per query block; dk/dv: query
blocks per key block). Here those ranges are compared with a block mask computed pair by pair in
numpy from the positions, causality and segments: every block with an unmasked pair is visited,
and with causal masking (default positions, offsets, a prefill against a cache, odd lengths) no
fully masked block is. The compiled cost that the 1.1x check of tests/ops/test_attention_tpu_compile.py
reads is the kernel's declared count of visited blocks (`flash_attention._static_visits`); it is
checked here against the brute-force count, so that figure counts blocks that really are skipped.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from qwen3_jax.ops import flash_common as fc
from qwen3_jax.ops.flash_attention import _static_visits


def _brute_force(d, q_pos, kv_pos, q_seg, kv_seg, causal):
    """[B, nq, nk]: whether block (i, j) holds a pair (real query t, real key s) that is not masked."""
    q_pos, kv_pos = np.asarray(q_pos), np.asarray(kv_pos)
    pair = np.ones((d.B, d.T, d.S), bool)
    if causal:
        pair &= kv_pos[:, None, :] <= q_pos[:, :, None]
    if q_seg is not None:
        pair &= np.asarray(q_seg)[:, :, None] == np.asarray(kv_seg)[:, None, :]
    blocks = np.zeros((d.B, d.nq, d.nk), bool)
    for i in range(d.nq):
        for j in range(d.nk):
            blocks[:, i, j] = pair[:, i * d.bq:(i + 1) * d.bq, j * d.bk:(j + 1) * d.bk].any(axis=(1, 2))
    return blocks


def _visited(need):
    """The steps the kernels run: forward/dq visit key blocks lo..hi of each query block, dk/dv
    query blocks lo..hi of each key block."""
    nq, nk = need.shape[1:]
    lo, hi = (np.asarray(a) for a in fc.block_ranges(need, 2))
    by_q = (np.arange(nk)[None, None, :] >= lo[..., None]) & (np.arange(nk)[None, None, :] <= hi[..., None])
    lo, hi = (np.asarray(a) for a in fc.block_ranges(need, 1))
    by_k = (np.arange(nq)[None, :, None] >= lo[:, None, :]) & (np.arange(nq)[None, :, None] <= hi[:, None, :])
    return by_q, by_k


def _setup(B, T, S, bq, bk, q_positions=None, kv_positions=None, segments=None):
    d = fc.make_dims((B, T, 4, 8), (B, S, 2, 8), (B, S, 2, 8), bq, bk)
    q_pos = fc.positions(q_positions, B, T, S - T, "q_positions")
    kv_pos = fc.positions(kv_positions, B, S, 0, "kv_positions")
    q_seg, kv_seg = (None, None) if segments is None else fc.segments(*segments, B, T, S)
    return d, q_pos, kv_pos, q_seg, kv_seg


CAUSAL = {  # name -> (B, T, S, bq, bk, q_positions, kv_positions)
    "square, one block": (2, 16, 16, 16, 16, None, None),
    "square, odd length": (2, 100, 100, 16, 16, None, None),
    "unequal blocks, odd": (1, 37, 37, 8, 16, None, None),
    "wide query blocks": (1, 61, 61, 32, 8, None, None),
    "prefill against a cache": (2, 20, 75, 8, 16, None, None),
    "scalar offsets": (1, 33, 50, 8, 8, 9, 4),
    "per-row offsets": (3, 24, 64, 8, 16, jnp.asarray([0, 17, 40]), None),
    "query before every key": (1, 16, 40, 8, 8, -30, None),
}


@pytest.mark.parametrize("name", list(CAUSAL))
def test_causal_visits_exactly_the_blocks_with_a_visible_pair(name):
    B, T, S, bq, bk, qp, kp = CAUSAL[name]
    d, q_pos, kv_pos, _, _ = _setup(B, T, S, bq, bk, qp, kp)
    need = fc.needed_blocks(d, q_pos, kv_pos, None, None, causal=True)
    want = _brute_force(d, q_pos, kv_pos, None, None, causal=True)
    np.testing.assert_array_equal(np.asarray(need), want)
    for visited in _visited(need):
        np.testing.assert_array_equal(visited, want)  # all needed blocks run, no fully masked one does
    assert (want.sum() == 0) == (name == "query before every key")
    if T == S and qp is None and kp is None and T > bk:
        assert want.sum() < want.size  # the causal mask does skip blocks here
    if not isinstance(qp, jnp.ndarray):  # the declared cost counts these same blocks
        assert _static_visits(d, qp, kp, True, False) == want.sum()


def test_unordered_positions_and_segments_visit_every_needed_block():
    """Zig-zag-like positions and packed segments: the ranges may also hold masked blocks, but
    never miss one with a visible pair; the needed set is exact for the positions alone."""
    B, T = 2, 48
    rng = np.random.default_rng(0)
    pos = jnp.asarray(np.stack([np.r_[np.arange(12), np.arange(36, 48), np.arange(12, 36)], rng.permutation(T)]))
    seg = jnp.asarray(np.stack([np.repeat([1, 2, 3], [10, 20, 18]), np.repeat([1, 2], [30, 18])]))
    for segments in (None, (seg, seg)):
        d, q_pos, kv_pos, q_seg, kv_seg = _setup(B, T, T, 8, 8, pos, pos, segments)
        need = np.asarray(fc.needed_blocks(d, q_pos, kv_pos, q_seg, kv_seg, causal=True))
        want = _brute_force(d, q_pos, kv_pos, q_seg, kv_seg, causal=True)
        assert not (want & ~need).any()
        if segments is None:
            np.testing.assert_array_equal(need, want)
        else:
            assert need.sum() < need.size  # segments skip blocks too
        for visited in _visited(jnp.asarray(need)):
            assert not (want & ~visited).any()


def test_full_attention_visits_every_block_and_padding_only_masks():
    d, q_pos, kv_pos, _, _ = _setup(1, 21, 45, 8, 16)
    need = fc.needed_blocks(d, q_pos, kv_pos, None, None, causal=False)
    assert np.asarray(need).all() and _brute_force(d, q_pos, kv_pos, None, None, causal=False).all()
    assert _static_visits(d, None, None, False, False) == need.size
