"""`qwen3-jax presets`: list the model presets, or write their YAML files."""

from __future__ import annotations

import os

HELP = "list the model presets or write configs/models/*.yaml from them"


def add_arguments(p):
    p.add_argument("--write", metavar="DIR", help="write one YAML file per preset into DIR")


def run(args) -> int:
    from qwen3_jax.model.params import param_count
    from qwen3_jax.presets import PRESETS, write_yaml_files

    if args.write:
        for path in write_yaml_files(args.write):
            print(path)
        return 0
    for name, cfg in PRESETS.items():
        total, active = param_count(cfg)
        extra = f"  active {active / 1e9:.2f}B" if cfg.is_moe else ""
        print(f"{name:18s} {cfg.model_type:9s} {total / 1e9:8.3f}B{extra}")
    return 0
