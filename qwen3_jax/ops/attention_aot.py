"""The attention kernels compiled for a TPU topology (ahead of time, from any host): the cases that
the tests and `experiments/bench_attention.py` check.

    python -m qwen3_jax.ops.attention_aot --seq 4096 32768     # prints one JSON line

Each case compiles one kernel with the real TPU compiler (Mosaic included) through
`qwen3_jax.aot`, under `jax.shard_map` over a 4-chip "v5p:2x2x1" mesh with one batch row per chip,
bf16, head_dim 128, 32 query heads on 8 KV heads (Qwen3-8B's attention):

* "forward": causal `flash_attention` returning out and lse;
* "backward": gradients of q, k, v through it (the forward plus the dq and dk/dv kernels);
* "decode": `decode_attention` of one query per row against a cache of `seq` slots.

For each it reports the per-chip memory of the compiled program, the compiled FLOPs and bytes
(for a Pallas kernel XLA counts the cost estimate the kernel declares, which counts the blocks
the causal skip visits), and the FLOPs an exact causal attention needs.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

CHIPS, N, K, H = 4, 32, 8, 128


def ideal_causal_flops(T: int, heads: int = N, head_dim: int = H) -> float:
    """Multiply-add FLOPs of q·kᵀ and p·v over the visible pairs of one causal row: 4·H·T(T+1)/2 per head."""
    return 4.0 * head_dim * heads * T * (T + 1) / 2


def compile_case(kind: str, seq: int, block: int | None = None) -> dict:
    """Compiles one case (see the module docstring); returns its report as a dict (no HLO).

    `block`: the flash kernels' query and key block (None: their default for `seq`, see
    `flash_common.default_block`) or the decode kernel's key block (None: its default).
    """
    from qwen3_jax.aot import compile_on_tpu, tpu_mesh
    from qwen3_jax.ops.decode_attention import decode_attention
    from qwen3_jax.ops.flash_attention import flash_attention
    from qwen3_jax.ops.flash_common import default_block

    block_arg = block
    mesh = tpu_mesh({"data": CHIPS})
    spec = P("data")

    def sds(shape, dtype=jnp.bfloat16):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))

    def sharded(fn, n_in, n_out):
        return jax.shard_map(fn, mesh=mesh, in_specs=(spec,) * n_in, out_specs=(spec,) * n_out if n_out > 1 else spec,
                             check_vma=False)

    B = CHIPS
    if kind in ("forward", "backward"):
        q, kv = sds((B, seq, N, H)), sds((B, seq, K, H))

        def fwd(q, k, v):
            return flash_attention(q, k, v, block_q=block, block_k=block, return_lse=True, interpret=False)

        if kind == "forward":
            fn = sharded(fwd, 3, 2)
        else:
            def loss(q, k, v):
                out, lse = fwd(q, k, v)
                return jnp.sum(out.astype(jnp.float32)) + jnp.sum(lse)

            fn = sharded(jax.grad(loss, argnums=(0, 1, 2)), 3, 3)
        report = compile_on_tpu(fn, q, kv, kv)
    elif kind == "decode":
        q = sds((B, 1, N, H))
        kc, vc = sds((B, K, seq, H)), sds((B, K, H, seq))
        valid, new = sds((B, seq), jnp.bool_), sds((B, 1, K, H))
        flag = sds((B,), jnp.bool_)

        def dec(q, kc, vc, valid, k_new, v_new, flag):
            kw = {} if block is None else {"block_k": block}
            return decode_attention(q, kc, vc, valid, extra_kv=(k_new, v_new, flag), interpret=False, **kw)

        report = compile_on_tpu(sharded(dec, 7, 1), q, kc, vc, valid, new, new, flag)
    else:
        raise ValueError(f"unknown case {kind!r}; expected forward, backward or decode")
    out = report.to_dict()
    out.pop("hlo")
    if block is None:  # the block the kernel used (decode: its own default block_k)
        block = default_block(seq) if kind != "decode" else inspect.signature(decode_attention).parameters["block_k"].default
    out.update(kind=kind, seq=seq, block=block, default_block=block_arg is None, chips=CHIPS, batch_per_chip=B // CHIPS,
               heads=N, kv_heads=K, head_dim=H, ideal_causal_flops_per_chip=ideal_causal_flops(seq) * (B // CHIPS))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, nargs="+", default=[4096])
    ap.add_argument("--kinds", nargs="+", default=["forward", "backward", "decode"])
    ap.add_argument("--block", type=int, default=None, help="block size (default: the kernels' defaults)")
    a = ap.parse_args(argv)
    results = [compile_case(k, s, a.block) for s in a.seq for k in a.kinds]
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
