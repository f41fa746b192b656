"""Text generation: sampling settings, the compiled prefill/decode engine, chat on top.

    from qwen3_jax.generate import Sampling, THINKING, NON_THINKING, GREEDY, Engine
"""

from qwen3_jax.generate.engine import ContextError, Engine, Result, Run, ThinkingBudget, default_stop_tokens
from qwen3_jax.generate.sampling import GREEDY, NON_THINKING, THINKING, Sampling

__all__ = ["ContextError", "Engine", "GREEDY", "NON_THINKING", "Result", "Run", "Sampling", "THINKING",
           "ThinkingBudget", "default_stop_tokens"]
