"""Pretraining: the data pipeline (`qwen3_jax.train.data`), the run config, loss, optimizer, the jitted step, checkpoints, metrics and the loop."""
