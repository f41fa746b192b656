"""`qwen3-jax grpo --config FILE --run-dir DIR [--init-from CKPT]`: GRPO with rule-based rewards."""

from __future__ import annotations

import sys

HELP = "reinforcement learning with GRPO (rollouts on the compiled engine, rule rewards); resumes a run directory"


def add_arguments(p):
    p.add_argument("--config", required=True, help="run config YAML with a grpo section (configs/post/)")
    p.add_argument("--run-dir", required=True, help="run directory: config, metrics, TensorBoard, checkpoints")
    p.add_argument("--init-from", default=None, metavar="CKPT",
                   help="starting (and reference) weights: a training run, an Orbax or a Hugging Face directory")
    p.add_argument("--steps", type=int, default=None, help="total optimizer steps (overrides train.steps)")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP", help="stop (with a checkpoint) after STEP")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set grpo.beta=0.0 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from qwen3_jax.cli.main import UserError
    from qwen3_jax.post.grpo import GRPOSection, grpo
    from qwen3_jax.post.rewards import RewardError
    from qwen3_jax.post.rl_loop import load_post_config
    from qwen3_jax.post.rollout import PromptError
    from qwen3_jax.train.metrics import NonFiniteLoss

    overrides = list(args.set) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
    try:
        cfg, section = load_post_config(args.config, "grpo", overrides)
        rl_run, records = grpo(cfg, GRPOSection.from_dict(section), args.run_dir, init_from=args.init_from,
                               stop_at=args.stop_at, quiet=args.quiet)
    except (PromptError, RewardError) as e:
        raise UserError(str(e)) from None
    except NonFiniteLoss as e:
        print(f"qwen3-jax grpo: {e}", file=sys.stderr)
        return 1
    last = records[-1] if records else None
    resumed = f" (resumed from step {rl_run.resumed_from})" if rl_run.resumed_from is not None else ""
    print(f"{args.run_dir}: " + (f"step {last['step']}, loss {last['loss']:.4f}, "
                                 f"reward {last['reward_mean']:.3f}{resumed}" if last else "nothing left to run"))
    return 0
