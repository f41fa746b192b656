"""Text generation: sampling settings, the compiled prefill/decode engine, chat on top.

    from qwen3_jax.generate import Sampling, THINKING, NON_THINKING, GREEDY, Engine, chat, chat_stream
    model = load_chat_model("tiny-dense")                # a Model with .tokenizer attached
    out = chat(model, [{"role": "user", "content": "Hi"}], thinking_budget=256)
"""

from qwen3_jax.generate.chat import STOP_THINKING, ChatEvent, ChatResult, Usage, chat, chat_stream
from qwen3_jax.generate.engine import (ContextError, Engine, Result, Run, ThinkingBudget, default_stop_tokens,
                                       generate)
from qwen3_jax.generate.sampling import GREEDY, NON_THINKING, THINKING, Sampling
from qwen3_jax.generate.session import load_chat_model

__all__ = ["ChatEvent", "ChatResult", "ContextError", "Engine", "GREEDY", "NON_THINKING", "Result", "Run",
           "STOP_THINKING", "Sampling", "THINKING", "ThinkingBudget", "Usage", "chat", "chat_stream",
           "default_stop_tokens", "generate", "load_chat_model"]
