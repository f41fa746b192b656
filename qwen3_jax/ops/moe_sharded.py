"""The dropless MoE layer on a mesh without an `expert` axis: every device routes its own tokens.

`ops.moe.sparse_moe` sorts all N·k token copies with one argsort. Left to the SPMD partitioner on a
batch-sharded input, that global sort is not partitioned: the copies of the whole batch are
gathered on every device (compiled for a v6e slice, the prefill of 64 × 32,768 tokens of
Qwen3-30B-A3B needed 97 GiB of temporaries per chip). Routing and the grouped matmul are per
token, so nothing needs a global view: here they run in `jax.shard_map` over the token axes
(`sharding.rules.token_axes`: data, fsdp, expert, sequence), each device sorting only its own
copies. The expert weights enter with their parameter sharding; their fsdp shards (the D dim) are
all-gathered inside, and with a `tensor` axis each device computes its slice of the expert MLP dim
F and the partial outputs are summed with `psum` (SwiGLU is elementwise in F, so the split is exact).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from qwen3_jax.ops import moe as moe_ops
from qwen3_jax.ops.expert_parallel_local import gather_weights, make_varying
from qwen3_jax.sharding.rules import mesh_axis_sizes, token_axes as mesh_token_axes


def needs_sharded_moe(mesh=None) -> bool:
    """True when the mesh splits tokens or the expert MLP dim (a token or `tensor` axis of size > 1),
    unless those axes are manual already: inside a caller's `shard_map` (the trainer's per-device
    micro-batch loop) the layer sees its own tokens and the plain path is the per-device one."""
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    sizes = mesh_axis_sizes(mesh)
    axes = set(mesh_token_axes(mesh)) | ({"tensor"} if sizes.get("tensor", 1) > 1 else set())
    manual = set(getattr(mesh, "manual_axes", ()) or ())
    return bool(axes) and not (axes & manual)


def _local(x, logits, wg, wu, wd, *, top_k, norm_topk_prob, impl, fsdp, tensor):
    wg, wu, wd = gather_weights(wg, wu, wd, fsdp)
    # Tokens (varying over the token axes) meet weights (varying over fsdp and tensor): mark every
    # operand varying over all of them here, so that the transposes of these casts (psums of the
    # weight gradients over the token axes, of dx over `tensor`) sit outside the tiled path's lax.cond.
    x, logits, wg, wu, wd = make_varying((x, logits, wg, wu, wd), moe_ops.varying_axes(x, logits, wg, wu, wd))
    weights, ids = moe_ops.route(logits, top_k, norm_topk_prob, x.dtype)
    y = moe_ops.sparse_moe(x, weights, ids, wg, wu, wd, impl=impl)
    return jax.lax.psum(y, tensor) if tensor is not None else y


def sharded_moe(x: jax.Array, router_logits: jax.Array, wg: jax.Array, wu: jax.Array, wd: jax.Array, *,
                top_k: int, norm_topk_prob: bool, impl: str = "auto", mesh=None) -> jax.Array:
    """`route` + `sparse_moe` of each device's tokens under the mesh (context mesh by default).

    Equal to `sparse_moe(x, *route(router_logits, ...), wg, wu, wd)` on one device (the `tensor`
    split only changes the order of a sum).

    Args:
      x: [N, D] tokens (global view).
      router_logits: [N, E].
      wg, wu: [E, D, F]; wd: [E, F, D] (any sharding; D divisible by fsdp, F by tensor).
      top_k, norm_topk_prob: routing settings of the config.
      impl: grouped matmul ("auto", "tiled", "ragged", "dense"; see `ops.moe`).
      mesh: the mesh (default: the context mesh).

    Returns:
      [N, D] in x's dtype.
    """
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    sizes = mesh_axis_sizes(mesh)
    if sizes.get("expert", 1) > 1:
        raise ValueError("sharded_moe is for meshes without an expert axis; use ops.expert_parallel")
    token_axes = mesh_token_axes(mesh)
    shards = math.prod(sizes[a] for a in token_axes)
    fsdp = "fsdp" if sizes.get("fsdp", 1) > 1 else None
    tensor = "tensor" if sizes.get("tensor", 1) > 1 else None
    if fsdp and x.shape[1] % sizes["fsdp"]:
        raise ValueError(f"hidden size {x.shape[1]} is not divisible by fsdp={sizes['fsdp']}")
    if tensor and wg.shape[2] % sizes["tensor"]:
        raise ValueError(f"moe_intermediate_size {wg.shape[2]} is not divisible by tensor={sizes['tensor']}")

    N = x.shape[0]
    Np = -(-N // shards) * shards  # every device holds the same number of tokens; padding rows are cut
    if Np != N:
        x = jnp.pad(x, ((0, Np - N), (0, 0)))
        router_logits = jnp.pad(router_logits, ((0, Np - N), (0, 0)))
    body = functools.partial(_local, top_k=top_k, norm_topk_prob=norm_topk_prob,
                             impl=moe_ops.resolve_impl(impl), fsdp=fsdp, tensor=tensor)
    tok = P(token_axes or None, None)
    w_in, w_out = P(None, fsdp, tensor), P(None, tensor, fsdp)
    y = jax.shard_map(body, mesh=mesh, in_specs=(tok, tok, w_in, w_in, w_out), out_specs=tok)(
        x, router_logits, wg, wu, wd)
    return y[:N]
