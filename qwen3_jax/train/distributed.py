"""Multi-process start-up: `jax.distributed.initialize` from environment variables.

Call `initialize_from_env()` before anything touches a JAX device. It does nothing unless asked:

* `QWEN3_JAX_COORDINATOR=host:port`, `QWEN3_JAX_NUM_PROCESSES=N`, `QWEN3_JAX_PROCESS_ID=i` (each
  process gets its own id): explicit, e.g. several CPU processes on one machine (CPU collectives then
  use gloo);
* `QWEN3_JAX_DISTRIBUTED=1`: `jax.distributed.initialize()` without arguments, which detects the
  cluster itself (Cloud TPU pod slices, SLURM, ...); run the same command on every host.
"""

from __future__ import annotations

import os

_DONE = False


def initialize_from_env(env=None) -> bool:
    """Initialises jax.distributed when the environment asks for it; returns whether it did."""
    global _DONE
    env = os.environ if env is None else env
    if _DONE:
        return True
    coordinator = env.get("QWEN3_JAX_COORDINATOR")
    import jax

    if coordinator:
        try:
            n, i = int(env["QWEN3_JAX_NUM_PROCESSES"]), int(env["QWEN3_JAX_PROCESS_ID"])
        except (KeyError, ValueError):
            raise ValueError("QWEN3_JAX_COORDINATOR needs QWEN3_JAX_NUM_PROCESSES and QWEN3_JAX_PROCESS_ID "
                             "(integers)") from None
        # CPU devices of several processes need a collectives backend (no effect on TPU/GPU).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=i)
        _DONE = True
    elif env.get("QWEN3_JAX_DISTRIBUTED", "") not in ("", "0"):
        jax.distributed.initialize()
        _DONE = True
    return _DONE
