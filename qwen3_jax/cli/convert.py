"""`qwen3-jax convert SRC DST`: a Hugging Face checkpoint directory -> our Orbax directory."""

from __future__ import annotations

import sys

HELP = "convert a Hugging Face Qwen3 checkpoint into an Orbax checkpoint (stacked, optionally sharded)"

DTYPES = ("float32", "bfloat16", "float16")


def add_arguments(p):
    p.add_argument("src", help="HF checkpoint directory (config.json + safetensors)")
    p.add_argument("dst", help="output directory (must not exist unless --force)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="store params in this dtype (default: as stored)")
    p.add_argument("--mesh", default=None, metavar="SPEC",
                   help='lay arrays out on this mesh, e.g. "expert=8,fsdp=4" (needs that many devices)')
    p.add_argument("--force", action="store_true", help="replace DST once the new checkpoint is complete")
    p.add_argument("--no-finite-check", action="store_true",
                   help="do not refuse weights holding NaN or Inf (the check reads every tensor once more)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def mesh_from_spec(spec):
    """Builds the mesh of `--mesh`, turning a bad spec or too few devices into a UserError."""
    from qwen3_jax.cli.main import UserError

    if not spec:
        return None
    from qwen3_jax.sharding.mesh import make_mesh

    try:
        return make_mesh(spec)
    except ValueError as e:
        raise UserError(f"--mesh: {e} (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
                        "gives N devices)") from None


def run(args) -> int:
    from qwen3_jax.checkpoint.convert import convert

    mesh = mesh_from_spec(args.mesh)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    out = convert(args.src, args.dst, dtype=args.dtype, mesh=mesh, force=args.force, progress=not args.quiet,
                  log=log, check_finite=not args.no_finite_check)
    print(f"wrote {out['output']} ({out['tensors']} tensors, {out['bytes'] / 2**20:.1f} MiB, "
          f"{out['params']} stacked params; copied {', '.join(out['copied']) or 'no tokenizer files'})")
    return 0
