"""`qwen3-jax train --config FILE --run-dir DIR`: pretrain (or resume) a run."""

from __future__ import annotations

import sys

HELP = "train a model from a run config (resumes the run directory's newest checkpoint)"


def add_arguments(p):
    p.add_argument("--config", required=True, help="run config YAML (e.g. configs/train/tiny_stage1.yaml)")
    p.add_argument("--run-dir", required=True, help="run directory: config, metrics, TensorBoard, checkpoints")
    p.add_argument("--steps", type=int, default=None, help="total optimizer steps (overrides train.steps)")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop (with a checkpoint) after this step without changing the schedule")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optimizer.lr=1e-3 (repeatable)")
    p.add_argument("--init-from", default=None, metavar="RUN_DIR",
                   help="start from another run's newest params (fresh optimizer and data)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from qwen3_jax.train.distributed import initialize_from_env

    initialize_from_env()  # before any device is touched
    from qwen3_jax.cli.main import UserError
    from qwen3_jax.train.config import load_config
    from qwen3_jax.train.data import DataError
    from qwen3_jax.train.loop import train
    from qwen3_jax.train.metrics import NonFiniteLoss

    overrides = list(args.set)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    try:
        cfg = load_config(args.config, overrides)
        result = train(cfg, args.run_dir, init_from=args.init_from, stop_at=args.stop_at, quiet=args.quiet)
    except DataError as e:
        raise UserError(str(e)) from None
    except NonFiniteLoss as e:
        print(f"qwen3-jax train: {e}", file=sys.stderr)
        return 1
    last = result.metrics[-1] if result.metrics else None
    msg = f"{args.run_dir}: step {result.step}"
    if result.resumed_from is not None:
        msg += f" (resumed from step {result.resumed_from})"
    if last:
        msg += f", loss {last['loss']:.4f}"
    print(msg)
    return 0
