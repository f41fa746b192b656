"""Planning for TPU slices that are not here: compile the real steps ahead of time with libtpu.

`qwen3-jax plan` (see `qwen3_jax.cli.plan`) and `experiments/tpu_plan.py` use:
topology (Cloud slice names -> chip grids and per-chip figures), steps (the programs compiled),
compile (per-chip memory split, collectives, FLOPs of one compiled request), worker (the compile
process), estimate (analytic guesses that rank meshes), search (mesh search and the verdict),
hlo (collectives in compiled HLO), flops (model FLOPs), report (text output).
"""
