"""Expert parallelism (EP): MoE layers whose experts are split over the mesh's `expert` axis.

Meshes and axis types. JAX 0.10 gives `jax.make_mesh` *Explicit* axis types by default (shardings
in array types). We deliberately build every mesh with `AxisType.Auto` (`sharding.mesh.make_mesh`)
and enter it with `jax.set_mesh` (`sharding.placement.mesh_context`): Flax Linen's logical constraints
only work on Auto axes with a context mesh. The MoE layer reads that context mesh with
`jax.sharding.get_abstract_mesh()` and, when it has an `expert` axis of size > 1, runs its expert
computation in `jax.shard_map` over it, so that the token exchange is written out explicitly instead
of being left to the partitioner (which would all-gather expert weights or tokens).

Inside the shard_map, per device (one shard of tokens, E / ep local experts):

1. route the local tokens (softmax over all experts, top-k; `ops.moe.route`);
2. sort the n·k token copies by expert; because experts are laid out contiguously over the
   `expert` axis (device d holds experts d·E_l .. (d+1)·E_l - 1), this also groups them by
   destination device;
3. pack them into a send buffer [ep, C, D] (C = capacity per destination) with the local expert id
   of every row, and exchange with `jax.lax.all_to_all` over `expert`;
4. run the local experts on the received rows with the grouped matmul of `ops.moe` (tiled on CPU,
   `ragged_dot` elsewhere); with a `tensor` axis the expert hidden dim F is split and the partial
   down projections are summed with `psum` over `tensor`;
5. send the results back with the reverse all-to-all, un-permute and combine with the routing
   weights exactly as the single-device `ops.moe.sparse_moe` does.

Tokens are sharded over every batch-like mesh axis present (`sharding.rules.token_axes`: data,
fsdp, expert, sequence); the all-to-all runs over `expert` only. Expert weights enter with their parameter sharding
("expert" -> expert, "embed" -> fsdp, "moe_mlp" -> tensor); the fsdp shards of the *local* experts
are all-gathered (each device needs the full D of its experts), never the expert axis.

Capacity. `capacity_factor=None` is dropless: C = n · min(k, E_l), the most copies n tokens can
send to one device, so nothing can be dropped. A finite factor gives C = ceil(factor · n · k / ep).
Rows beyond C for a destination are dropped in sorted order (within a destination: by local expert,
then by token index, then by slot), contribute zero to the output, and are counted: the layer
returns the global number of dropped copies.

Ragged dispatch. On TPU/GPU, `jax.lax.ragged_all_to_all` sends exactly the routed rows instead of
fixed C-row blocks (`ops.expert_parallel_ragged`); it is picked by `dispatch="auto"` there, except
on TPU v6e, whose compiler (libtpu 0.0.42) rejects the primitive: v6e runs the fixed exchange. XLA:CPU
does not implement ragged-all-to-all, so on CPU the fixed all-to-all runs; the ragged path is tested
on CPU through an emulation of the primitive built from `all_to_all`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from qwen3_jax.ops import moe as moe_ops
from qwen3_jax.ops.expert_parallel_local import combine, dispatch_plan, gather_weights, local_expert_ffn
from qwen3_jax.ops.expert_parallel_ragged import local_ragged
from qwen3_jax.sharding.rules import mesh_axis_sizes, token_axes as mesh_token_axes
from qwen3_jax.sharding.platform import target_device_kind, target_platform

DISPATCHES = ("auto", "fixed", "ragged", "ragged_emulated")


def expert_axis_size(mesh=None) -> int:
    """Size of the `expert` axis of `mesh` (context mesh by default); 1 when there is none."""
    return mesh_axis_sizes(mesh).get("expert", 1)


# Device kinds whose compiler rejects ragged-all-to-all: libtpu 0.0.42 (the one jax 0.10.2 pins)
# fails a v6e compile with "Assigned barrier is not acceptable for opcode: ragged-all-to-all".
NO_RAGGED_ALL_TO_ALL = ("TPU v6 lite",)


def resolve_dispatch(dispatch: str) -> str:
    """"auto" -> "ragged" where ragged-all-to-all compiles (TPU v4/v5, GPU), "fixed" on CPU and v6e.

    The platform is the one compiled for (the context mesh's devices; see `sharding.platform`).
    """
    if dispatch not in DISPATCHES:
        raise ValueError(f"unknown EP dispatch {dispatch!r}; expected one of {DISPATCHES}")
    if dispatch == "auto":
        if target_platform() == "cpu" or target_device_kind() in NO_RAGGED_ALL_TO_ALL:
            return "fixed"
        return "ragged"
    return dispatch


def capacity_per_destination(local_tokens: int, top_k: int, num_experts: int, ep: int,
                             capacity_factor: float | None) -> int:
    """Rows reserved in the send buffer for each destination device.

    Args:
      local_tokens: tokens on one device (n).
      top_k, num_experts, ep: experts per token, all experts, devices on the expert axis.
      capacity_factor: None for dropless, else the multiple of the balanced load n·k/ep.
    """
    dropless = local_tokens * min(top_k, num_experts // ep)
    if capacity_factor is None:
        return max(1, dropless)
    if capacity_factor <= 0:
        raise ValueError(f"capacity_factor must be > 0 (or None for dropless), got {capacity_factor}")
    return max(1, min(dropless, math.ceil(capacity_factor * local_tokens * top_k / ep)))


def _local_fixed(x, logits, valid, wg, wu, wd, *, top_k, norm_topk_prob, capacity_factor, impl, ep,
                 fsdp, tensor, token_axes):
    """Per-device body of the fixed-size all-to-all dispatch (see the module docstring)."""
    wg, wu, wd = gather_weights(wg, wu, wd, fsdp)
    El = wg.shape[0]
    E = El * ep
    weights, ids = moe_ops.route(logits, top_k, norm_topk_prob, x.dtype)
    n, D = x.shape
    C = capacity_per_destination(n, top_k, E, ep, capacity_factor)
    plan = dispatch_plan(ids, valid, E, ep, C)

    xs = x[plan["order"] // top_k]  # [n·k, D] token rows in expert order
    send = jnp.zeros((ep * C, D), x.dtype).at[plan["slot"]].set(xs, mode="drop")
    send_e = jnp.full((ep * C,), El, jnp.int32).at[plan["slot"]].set(plan["sorted_e"] % El, mode="drop")
    # [ep, C, ...]: block d goes to device d; after the exchange block s came from device s.
    recv = jax.lax.all_to_all(send.reshape(ep, C, D), "expert", 0, 0, tiled=True).reshape(ep * C, D)
    recv_e = jax.lax.all_to_all(send_e.reshape(ep, C), "expert", 0, 0, tiled=True).reshape(ep * C)

    # Tile height from the expected (balanced) rows per local expert, not the padded buffer size.
    tm = moe_ops._tile_rows(n * top_k, El)
    out = local_expert_ffn(recv, recv_e, wg, wu, wd, impl, tm)
    if tensor is not None:
        out = jax.lax.psum(out, tensor)  # partial sums over the F shards
    back = jax.lax.all_to_all(out.reshape(ep, C, D), "expert", 0, 0, tiled=True).reshape(ep * C, D)

    sorted_out = jnp.where(plan["keep"][:, None], back[jnp.minimum(plan["slot"], ep * C - 1)], 0)
    y = combine(sorted_out, plan, weights)
    return y, jax.lax.psum(plan["dropped"], token_axes)


def expert_parallel_moe(x: jax.Array, router_logits: jax.Array, wg: jax.Array, wu: jax.Array, wd: jax.Array, *,
                        top_k: int, norm_topk_prob: bool, capacity_factor: float | None = None,
                        impl: str = "auto", dispatch: str = "auto", mesh=None) -> tuple[jax.Array, jax.Array]:
    """The MoE expert computation with experts split over the mesh's `expert` axis.

    Call it inside `jax.jit` under a mesh (`jax.set_mesh`, or pass `mesh`). Routing is the same as
    `ops.moe.route`; with `capacity_factor=None` the result equals `ops.moe.sparse_moe` on one device.

    Args:
      x: [N, D] tokens (global view; sharded or not).
      router_logits: [N, E].
      wg, wu: [E, D, F]; wd: [E, F, D] (global view, any sharding; E divisible by the expert axis).
      top_k, norm_topk_prob: routing settings of the config.
      capacity_factor: None for dropless; else rows per destination = ceil(factor · n · k / ep).
      impl: grouped matmul ("auto", "tiled", "ragged", "dense"; see `ops.moe`).
      dispatch: "auto", "fixed" (all_to_all), "ragged" (ragged_all_to_all; TPU/GPU) or
        "ragged_emulated" (the ragged path with the primitive emulated by all_to_all; for tests).
      mesh: the mesh (default: the context mesh).

    Returns:
      (y [N, D] in x's dtype, dropped token copies summed over all devices, int32 scalar).
    """
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    sizes = mesh_axis_sizes(mesh)
    ep = sizes.get("expert", 1)
    E = wg.shape[0]
    if ep < 2:
        raise ValueError("expert_parallel_moe needs a mesh with an `expert` axis of size > 1")
    if E % ep:
        raise ValueError(f"{E} experts cannot be split evenly over an expert axis of size {ep}")
    token_axes = mesh_token_axes(mesh)
    shards = math.prod(sizes[a] for a in token_axes)
    fsdp = "fsdp" if sizes.get("fsdp", 1) > 1 else None
    tensor = "tensor" if sizes.get("tensor", 1) > 1 else None
    if fsdp and x.shape[1] % sizes["fsdp"]:
        raise ValueError(f"hidden size {x.shape[1]} is not divisible by fsdp={sizes['fsdp']}")
    if tensor and wg.shape[2] % sizes["tensor"]:
        raise ValueError(f"moe_intermediate_size {wg.shape[2]} is not divisible by tensor={sizes['tensor']}")

    N = x.shape[0]
    Np = -(-N // shards) * shards  # pad so every device holds the same number of tokens
    valid = jnp.arange(Np) < N
    if Np != N:
        x = jnp.pad(x, ((0, Np - N), (0, 0)))
        router_logits = jnp.pad(router_logits, ((0, Np - N), (0, 0)))

    kind = resolve_dispatch(dispatch)
    kw = dict(top_k=top_k, norm_topk_prob=norm_topk_prob, capacity_factor=capacity_factor,
              impl=moe_ops.resolve_impl(impl), ep=ep, fsdp=fsdp, tensor=tensor, token_axes=token_axes)
    if kind == "fixed":
        body = functools.partial(_local_fixed, **kw)
    else:
        body = functools.partial(local_ragged, emulate=(kind == "ragged_emulated"), **kw)
    tok = P(token_axes or None, None)
    w_in, w_out = P("expert", fsdp, tensor), P("expert", tensor, fsdp)
    y, dropped = jax.shard_map(body, mesh=mesh, in_specs=(tok, tok, P(token_axes or None), w_in, w_in, w_out),
                               out_specs=(tok, P()))(x, router_logits, valid, wg, wu, wd)
    return y[:N], dropped
