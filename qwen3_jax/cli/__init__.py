"""Command-line entry points (`qwen3-jax <command>`)."""
