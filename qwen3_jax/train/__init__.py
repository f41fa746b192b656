"""Pretraining: the data pipeline (`qwen3_jax.train.data`) and the trainer built on it."""
