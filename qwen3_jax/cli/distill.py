"""`qwen3-jax distill --config FILE --run-dir DIR --teacher T [--init-from S]`: strong-to-weak distillation."""

from __future__ import annotations

import sys

HELP = "distil a student from a teacher sharing its tokenizer (off- or on-policy KL); resumes a run directory"


def add_arguments(p):
    p.add_argument("--config", required=True, help="run config YAML with a distill section (configs/post/distill.yaml)")
    p.add_argument("--run-dir", required=True, help="run directory: config, metrics, TensorBoard, checkpoints")
    p.add_argument("--teacher", required=True, metavar="T", help="teacher: a training run, an Orbax or a HF directory")
    p.add_argument("--init-from", default=None, metavar="S",
                   help="student's starting weights: a training run, an Orbax or a Hugging Face directory")
    p.add_argument("--steps", type=int, default=None, help="total optimizer steps (overrides train.steps)")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP", help="stop (with a checkpoint) after STEP")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set distill.mode=off_policy (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from qwen3_jax.cli.main import UserError
    from qwen3_jax.post.distill import DistillSection, distill
    from qwen3_jax.post.distill_loss import VocabularyMismatch
    from qwen3_jax.post.rl_loop import load_post_config
    from qwen3_jax.post.rollout import PromptError
    from qwen3_jax.train.metrics import NonFiniteLoss

    overrides = list(args.set) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
    try:
        cfg, section = load_post_config(args.config, "distill", overrides)
        rl_run, records = distill(cfg, DistillSection.from_dict(section), args.run_dir, args.teacher,
                                  init_from=args.init_from, stop_at=args.stop_at, quiet=args.quiet)
    except (PromptError, VocabularyMismatch) as e:
        raise UserError(str(e)) from None
    except NonFiniteLoss as e:
        print(f"qwen3-jax distill: {e}", file=sys.stderr)
        return 1
    last = records[-1] if records else None
    resumed = f" (resumed from step {rl_run.resumed_from})" if rl_run.resumed_from is not None else ""
    print(f"{args.run_dir}: " + (f"step {last['step']}, KL {last['loss']:.4f}{resumed}"
                                 if last else "nothing left to run"))
    return 0
