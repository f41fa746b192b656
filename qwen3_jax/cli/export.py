"""`qwen3-jax export SRC DST`: our Orbax directory -> a Hugging Face safetensors checkpoint."""

from __future__ import annotations

import sys

HELP = "export an Orbax checkpoint as Hugging Face safetensors (loads in transformers and vLLM)"


def add_arguments(p):
    from qwen3_jax.cli.convert import DTYPES

    p.add_argument("src", help="directory written by `qwen3-jax convert` (params/ + qwen3_config.json), or a "
                   "`qwen3-jax train` run directory (its newest complete checkpoint)")
    p.add_argument("dst", help="output directory (must not exist unless --force)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="write tensors in this dtype (default: as stored)")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors file (default 5GB)")
    p.add_argument("--force", action="store_true", help="replace DST once the new checkpoint is complete")
    p.add_argument("--no-verify", action="store_true", help="skip the checksum comparison of the stored arrays")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from qwen3_jax.checkpoint.export import export
    from qwen3_jax.checkpoint.safetensors_write import parse_size
    from qwen3_jax.cli.main import UserError

    try:
        max_bytes = parse_size(args.max_shard_size)
    except ValueError as e:
        raise UserError(f"--max-shard-size: {e}") from None
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    out = export(args.src, args.dst, dtype=args.dtype, max_shard_size=max_bytes, force=args.force,
                 progress=not args.quiet, log=log, verify=not args.no_verify)
    print(f"wrote {out['output']} ({out['tensors']} tensors in {len(out['files'])} files, "
          f"{out['bytes'] / 2**20:.1f} MiB)")
    return 0
