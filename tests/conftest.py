"""Test-wide setup: 8 fake CPU devices (must happen before JAX is imported) and shared fixtures."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The Qwen3 tokenizer that tests build (and the CLI subprocesses they start, which inherit this)
# is cached in a temporary directory, never in the user's ~/.cache.
if "QWEN3_JAX_CACHE_DIR" not in os.environ:
    os.environ["QWEN3_JAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="qwen3_jax_test_cache_")
    atexit.register(shutil.rmtree, os.environ["QWEN3_JAX_CACHE_DIR"], True)
