"""qwen3_jax: Qwen3 dense and MoE models in JAX / Flax Linen, exact to the Hugging Face reference.

    import qwen3_jax
    model = qwen3_jax.load("path/to/Qwen3-0.6B")    # HF checkpoint dir or a preset name
    logits = model.logits(input_ids)                 # [B, T] -> [B, T, vocab]
    tok = qwen3_jax.Tokenizer.qwen3()                # the Qwen3 tokenizer, no checkpoint needed
    prompt = qwen3_jax.chat.render(messages, enable_thinking=False)

Axis letters used in shapes and einsum strings throughout the code:
B batch, T query length, S key length, D model dim, N query heads, K KV heads, G = N / K,
H head dim, F MLP dim, E experts, C tokens per expert, V vocab, L layers; in the MoE code
M tokens flattened over batch and length and R the experts each token is routed to (top-k).
"""

from qwen3_jax.api import Model, load
from qwen3_jax.config import ConfigError, Qwen3Config, RopeScaling
from qwen3_jax.generate.sampling import GREEDY, NON_THINKING, THINKING, Sampling
from qwen3_jax.checkpoint.safetensors_io import CheckpointError
from qwen3_jax.losses import RouterStats, global_batch_balance_loss, load_balancing_loss, router_stats
from qwen3_jax.router_metrics import router_statistics
from qwen3_jax.model.params import init_params, param_count
from qwen3_jax.model.transformer import Output, Qwen3, init_cache
from qwen3_jax.presets import PRESETS, get_preset
from qwen3_jax.sharding.mesh import make_mesh
from qwen3_jax.text import chat
from qwen3_jax.text.tokenizer import Tokenizer

__all__ = [
    "CheckpointError", "ConfigError", "GREEDY", "Model", "NON_THINKING", "Output", "PRESETS",
    "Qwen3", "Qwen3Config", "RopeScaling", "RouterStats", "Sampling", "THINKING", "Tokenizer",
    "chat", "get_preset", "global_batch_balance_loss", "init_cache", "init_params", "load",
    "load_balancing_loss", "make_mesh", "param_count", "router_statistics", "router_stats",
]
