"""`qwen3-jax plan`: compile the real training or serving step for a TPU slice that is not here.

    qwen3-jax plan --model qwen3-235b-a22b --topology v5p-256 [--mesh fsdp=16,expert=8] \\
                   --task train --seq 4096 --batch 256 [--remat full] [--json]
    qwen3-jax plan --model qwen3-30b-a3b --topology v6e-8 --task serve --seq 32768 --batch 16

Ahead-of-time compilation with libtpu (`pip install -e '.[tpu]'`) in a worker process: per-chip
HBM split, the mesh, model FLOPs, the collectives of the compiled program and the compile time.
Without --mesh the meshes dividing the slice are searched (see `qwen3_jax.plan.search`). Exit
status: 0 when it fits, 1 when no mesh fits (with suggestions), 2 for bad input.
"""

from __future__ import annotations

import json

HELP = "compile the train or serve step for a TPU slice (no TPU needed) and report memory, FLOPs, collectives"


def add_arguments(p):
    p.add_argument("--model", required=True, help="preset name (e.g. qwen3-30b-a3b), checkpoint dir or config.json")
    p.add_argument("--topology", required=True, help="Cloud TPU slice: v5p-256, v6e-8, v5litepod-16, v4-32, "
                                                     "or a topology such as v5p:4x4x8")
    p.add_argument("--mesh", default=None, help="axis sizes, e.g. fsdp=16,expert=8 (default: search)")
    p.add_argument("--task", choices=("train", "serve"), default="train")
    p.add_argument("--seq", type=int, required=True, help="train: sequence length; serve: prompt length")
    p.add_argument("--batch", type=int, required=True, help="train: global batch (rows); serve: rows")
    p.add_argument("--remat", default="full", help="train: remat policy (none, full, dots, save_layer_inputs)")
    p.add_argument("--microbatches", type=int, default=None,
                   help="train: gradient-accumulation micro-batches (default: the fewest that look like fitting)")
    p.add_argument("--capacity-factor", type=float, default=None,
                   help="train, MoE: expert-parallel capacity factor (receive rows per chip = factor x its "
                        "tokens x top-k; default: dropless, the worst case)")
    p.add_argument("--attention", default="auto",
                   help="attention implementation compiled: auto (the Pallas flash kernels on TPU; ring "
                        "attention on meshes with a sequence axis), flash, ring or xla")
    p.add_argument("--new-tokens", type=int, default=512, help="serve: new tokens per row (sizes the cache)")
    p.add_argument("--top", type=int, default=3, help="mesh search: compile the best N candidates (when none of them "
                   "fits, up to 2 more, one by one)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _check(args, error):
    from qwen3_jax.model.transformer import REMAT_POLICIES
    from qwen3_jax.plan.topology import TopologyError, parse_slice
    from qwen3_jax.plan.worker import load_config
    from qwen3_jax.sharding.mesh import parse_mesh_spec

    if args.seq < 1 or args.batch < 1:
        error(f"--seq and --batch must be positive (got seq={args.seq}, batch={args.batch})")
    if args.remat not in REMAT_POLICIES:
        error(f"--remat {args.remat!r}: expected one of {', '.join(REMAT_POLICIES)}")
    if args.microbatches is not None and (args.microbatches < 1 or args.batch % args.microbatches):
        error(f"--microbatches {args.microbatches} must be >= 1 and divide --batch {args.batch}")
    if args.capacity_factor is not None and not args.capacity_factor > 0:
        error(f"--capacity-factor must be > 0, got {args.capacity_factor}")
    from qwen3_jax.model.attention_impl import IMPLS as ATTENTION_IMPLS

    if args.attention not in ATTENTION_IMPLS:
        error(f"--attention {args.attention!r}: expected one of {', '.join(ATTENTION_IMPLS)}")
    if args.top < 1:
        error(f"--top must be >= 1, got {args.top}")
    try:
        slice_ = parse_slice(args.topology)
    except TopologyError as e:
        error(str(e))
    try:
        cfg = load_config(args.model)
    except KeyError as e:
        error(str(e.args[0]))
    if args.seq > cfg.max_position_embeddings:
        error(f"--seq {args.seq} is above the model's {cfg.max_position_embeddings} positions")
    mesh = None
    if args.mesh:
        try:
            mesh = parse_mesh_spec(args.mesh)
        except ValueError as e:
            error(str(e))
        free = [a for a, s in mesh.items() if s == -1]
        known = 1
        for s in mesh.values():
            known *= s if s != -1 else 1
        if free:
            if slice_.chips % known:
                error(f"--mesh {args.mesh}: {slice_.chips} chips are not divisible by {known}")
            mesh[free[0]] = slice_.chips // known
            known = slice_.chips
        if known != slice_.chips:
            error(f"--mesh {args.mesh} covers {known} chips, but {args.topology} has {slice_.chips}")
    return cfg, slice_, mesh


def run(args) -> int:
    from qwen3_jax.cli.main import UserError
    from qwen3_jax.plan.report import format_plan
    from qwen3_jax.plan.search import plan

    def error(msg):
        raise UserError(msg)

    cfg, slice_, mesh = _check(args, error)
    try:
        import libtpu  # noqa: F401
    except ImportError:
        error("compiling for TPU needs libtpu: pip install -e '.[tpu]'")
    from tqdm import tqdm

    bar = tqdm(desc="compiling", unit="mesh", leave=False, disable=args.json)
    result = plan(cfg, args.model, slice_, args.task, args.seq, args.batch, mesh=mesh, remat=args.remat,
                  microbatches=args.microbatches, new_tokens=args.new_tokens, top=args.top,
                  progress=lambda r: bar.update(1), capacity_factor=args.capacity_factor,
                  attention_impl=args.attention)
    bar.close()
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_plan(result))
    return 0 if result["fits"] else 1
