"""`qwen3-jax sft --config FILE --run-dir DIR [--init-from CKPT]`: supervised fine-tuning on chat data."""

from __future__ import annotations

import sys

HELP = "fine-tune on chat JSONL (loss on assistant tokens, thinking-mode fusion data); resumes a run directory"


def add_arguments(p):
    p.add_argument("--config", required=True, help="run config YAML (e.g. configs/post/stage1_cold_start.yaml)")
    p.add_argument("--run-dir", required=True, help="run directory: config, metrics, TensorBoard, checkpoints")
    p.add_argument("--init-from", default=None, metavar="CKPT",
                   help="starting weights: a training run, an Orbax or a Hugging Face directory")
    p.add_argument("--steps", type=int, default=None, help="total optimizer steps (overrides train.steps)")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP", help="stop (with a checkpoint) after STEP")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optimizer.lr=1e-5 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from qwen3_jax.train.distributed import initialize_from_env

    initialize_from_env()
    from qwen3_jax.cli.main import UserError
    from qwen3_jax.post.sft import sft
    from qwen3_jax.post.sft_data import SFTDataError
    from qwen3_jax.train.config import load_config
    from qwen3_jax.train.metrics import NonFiniteLoss

    overrides = list(args.set) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
    try:
        cfg = load_config(args.config, overrides)
        result = sft(cfg, args.run_dir, init_from=args.init_from, stop_at=args.stop_at, quiet=args.quiet)
    except SFTDataError as e:
        raise UserError(str(e)) from None
    except NonFiniteLoss as e:
        print(f"qwen3-jax sft: {e}", file=sys.stderr)
        return 1
    last = result.metrics[-1] if result.metrics else None
    print(f"{args.run_dir}: step {result.step}"
          + (f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else "")
          + (f", loss {last['loss']:.4f}" if last else ""))
    return 0
