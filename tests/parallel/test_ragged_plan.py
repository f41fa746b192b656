"""The offsets and sizes of the ragged expert-parallel dispatch, checked without ragged_all_to_all.

XLA:CPU cannot run `jax.lax.ragged_all_to_all`, so this plays the primitive's documented semantics
in Python over every device's `ragged_plan` and checks that each token copy reaches a device holding
its expert, is labelled with the right local expert, and comes back to the slot it left from.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from qwen3_jax.ops.expert_parallel_ragged import ragged_plan, receive_rows


def _ragged_all_to_all(operands, outputs, plans, key):
    """Python model of ragged_all_to_all (one slice per device), as its docstring specifies."""
    ep = len(operands)
    results = [list(o) for o in outputs]
    for s in range(ep):
        in_off, send, out_off, _ = (np.asarray(v) for v in plans[s][key])
        for d in range(ep):
            assert int(np.asarray(plans[d][key][3])[s]) == send[d]  # recv_sizes mirror send_sizes
            results[d][out_off[d]:out_off[d] + send[d]] = operands[s][in_off[d]:in_off[d] + send[d]]
    return results


@pytest.mark.parametrize("capacity_factor", [None, 1.0, 0.5])
def test_plan_routes_every_copy_and_back(capacity_factor):
    ep, El, n, k = 4, 2, 6, 2
    E = ep * El
    rng = np.random.default_rng(0)
    # Each device's n·k copies over E experts, skewed towards device 0's experts.
    counts = np.stack([np.bincount(rng.choice(E, n * k, p=np.r_[[0.3] * 2, [0.4 / 6] * 6]), minlength=E)
                       for _ in range(ep)])
    R = receive_rows(n, k, E, ep, capacity_factor)
    plans = [ragged_plan(jnp.asarray(counts), me, ep, R) for me in range(ep)]
    # Sorted copies of each device, labelled (source, expert, rank within that expert).
    sent = [[(s, e, i) for e in range(E) for i in range(counts[s, e])] for s in range(ep)]
    got = _ragged_all_to_all(sent, [[None] * R] * ep, plans, "fwd")

    accepted_total = 0
    for d in range(ep):
        row_e = np.asarray(plans[d]["row_expert"])
        rows = got[d]
        filled = [r for r in rows if r is not None]
        assert rows[:len(filled)] == filled  # packed at the front, source after source
        accepted_total += len(filled)
        for r, label in enumerate(rows):
            if label is None:
                assert row_e[r] == El
            else:
                assert label[1] // El == d and row_e[r] == label[1] % El
        # Receivers accept greedily up to their capacity.
        assert len(filled) == min(R, sum(counts[s, d * El:(d + 1) * El].sum() for s in range(ep)))

    back = _ragged_all_to_all(got, [[None] * len(x) for x in sent], plans, "bwd")
    returned = 0
    for s in range(ep):
        start, acc = np.asarray(plans[s]["send_start"]), np.asarray(plans[s]["accepted"])
        for j, label in enumerate(sent[s]):
            d = label[1] // El
            kept = j - start[d] < acc[d]
            assert back[s][j] == (label if kept else None)
            returned += kept
    assert returned == accepted_total
    if capacity_factor is None:
        assert returned == counts.sum()  # dropless
    elif capacity_factor == 0.5:
        assert returned < counts.sum()  # the skew overflows device 0


def _imported_modules(module) -> set[str]:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(module))
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}


def test_dispatch_modules_import_one_way():
    # The fixed dispatch uses the ragged one; both take the per-device helpers from
    # `ops.expert_parallel_local`, so the ragged module never imports the fixed one (no cycle).
    from qwen3_jax.ops import expert_parallel, expert_parallel_local, expert_parallel_ragged

    assert "qwen3_jax.ops.expert_parallel" not in _imported_modules(expert_parallel_ragged)
    assert "qwen3_jax.ops.expert_parallel" not in _imported_modules(expert_parallel_local)
    assert "qwen3_jax.ops.expert_parallel_ragged" in _imported_modules(expert_parallel)
