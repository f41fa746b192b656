"""The user-facing entry points: `load` a model and call it.

    model = qwen3_jax.load("path/to/Qwen3-0.6B")      # HF checkpoint directory, or a preset name
    logits = model.logits(input_ids)                  # [B, T] int -> [B, T, V] float32
    model.config, model.params                        # Qwen3Config, plain pytree of arrays
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from qwen3_jax.checkpoint.hf_load import load_hf_params
from qwen3_jax.config import Qwen3Config
from qwen3_jax.model.attention_impl import resolve as resolve_attention
from qwen3_jax.model.params import init_params, param_count
from qwen3_jax.model.transformer import Output, Qwen3
from qwen3_jax.presets import PRESETS, get_preset
from qwen3_jax.sharding.placement import mesh_context, shard_params

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _dtype(d) -> Any:
    if isinstance(d, str):
        if d not in _DTYPES:
            raise ValueError(f"unknown dtype {d!r}; expected one of {list(_DTYPES)}")
        return _DTYPES[d]
    return d


class Model:
    """A Qwen3 model with its params, ready to call.

    Attributes:
      config: the architecture.
      params: nested dict of arrays (sharded when a mesh was given).
      module: the Flax Linen module (`module.apply({"params": params}, ...)`).
      mesh: the mesh params live on, or None for one device.
      source_dir: the checkpoint directory it was loaded from (None for presets and fresh params);
        its generation_config.json gives the default stop tokens.
      tokenizer: the `Tokenizer` used by `chat` and to bound sampled ids: the one given, else the
        source directory's tokenizer.json (read on first use), else None (`chat` then uses the
        Qwen3 tokenizer, `Tokenizer.qwen3()`).
    """

    def __init__(self, config: Qwen3Config, params, *, dtype=jnp.float32, param_dtype=None, mesh: Mesh | None = None,
                 moe_impl: str = "auto", remat: str = "none", moe_capacity_factor: float | None = None,
                 attention_impl: str = "xla", ring_layout: str = "contiguous", tokenizer=None,
                 source_dir: str | None = None):
        """Args:
          config, params: the architecture and a matching param tree.
          dtype: compute dtype; param_dtype: storage dtype of the params (default: `dtype`), e.g.
            float32 params with bfloat16 compute for mixed-precision training.
          mesh, moe_impl, remat, moe_capacity_factor, attention_impl, ring_layout: see `load`.
          tokenizer, source_dir: see the class attributes.
        """
        # Absolute, so the lazy tokenizer read still finds the directory after a chdir.
        self.source_dir = None if source_dir is None else os.path.abspath(os.fspath(source_dir))
        self._tokenizer = tokenizer
        self.config = config
        self.params = params
        self.mesh = mesh
        self.dtype = _dtype(dtype)
        self.param_dtype = self.dtype if param_dtype is None else _dtype(param_dtype)
        impl, platform = resolve_attention(attention_impl, mesh, config.dual_chunk_attention_config is not None)
        self.attention_impl = impl
        self.module = Qwen3(config, dtype=self.dtype, param_dtype=self.param_dtype, remat=remat, moe_impl=moe_impl,
                            moe_capacity_factor=moe_capacity_factor, attention_impl=impl, attention_platform=platform,
                            ring_layout=ring_layout)
        self._forward = jax.jit(self._apply, static_argnames=("return_hidden",))

    @property
    def tokenizer(self):
        if self._tokenizer is None and self.source_dir is not None:
            if os.path.isfile(os.path.join(self.source_dir, "tokenizer.json")):
                from qwen3_jax.text.tokenizer import Tokenizer

                self._tokenizer = Tokenizer.from_pretrained(self.source_dir)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tok) -> None:
        self._tokenizer = tok

    def _apply(self, params, input_ids, attention_mask, positions, return_hidden=False) -> Output:
        # Traced inside the caller's `mesh_context` (jax.set_mesh must be entered outside jit).
        return self.module.apply({"params": params}, input_ids, positions=positions,
                                 attention_mask=attention_mask, return_hidden=return_hidden)

    def _check_ids(self, input_ids):
        if isinstance(input_ids, (str, bytes)):
            raise ValueError("input_ids must be a [batch, seq] array of token ids, got a string; encode it first")
        try:
            ids = jnp.asarray(input_ids)
        except (TypeError, ValueError) as e:
            raise ValueError(f"input_ids must be a [batch, seq] array of token ids ({e})") from None
        if ids.ndim != 2 or 0 in ids.shape:
            raise ValueError(f"input_ids must be [batch, seq] with batch, seq >= 1; got shape {tuple(ids.shape)}")
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"input_ids must be integers; got dtype {ids.dtype}")
        if not isinstance(input_ids, jax.core.Tracer):
            host = np.asarray(input_ids)
            if host.size and (host.min() < 0 or host.max() >= self.config.vocab_size):
                raise ValueError(f"input_ids must lie in [0, {self.config.vocab_size}); got values in "
                                 f"[{host.min()}, {host.max()}]")
        return ids.astype(jnp.int32)

    def __call__(self, input_ids, attention_mask=None, positions=None, return_hidden: bool = False) -> Output:
        """Forward pass; returns `Output` (logits, router logits, optional hidden states)."""
        ids = self._check_ids(input_ids)
        if attention_mask is not None:
            attention_mask = jnp.asarray(attention_mask)
            if attention_mask.shape != ids.shape:
                raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                                 f"{tuple(ids.shape)}")
        if positions is not None:
            positions = jnp.asarray(positions, jnp.int32)
            if positions.shape != ids.shape:
                raise ValueError(f"positions shape {tuple(positions.shape)} != input_ids shape {tuple(ids.shape)}")
        with mesh_context(self.config, self.mesh):
            return self._forward(self.params, ids, attention_mask, positions, return_hidden=return_hidden)

    def logits(self, input_ids, attention_mask=None, positions=None) -> jax.Array:
        """[B, T] int ids -> [B, T, vocab] float32 logits."""
        return self(input_ids, attention_mask, positions).logits.astype(jnp.float32)

    def generate(self, prompts, max_new_tokens: int = 256, sampling=None, stop_tokens=None, **kwargs):
        """New token ids for each prompt (lists of ids); see `qwen3_jax.generate.engine.generate`."""
        from qwen3_jax.generate.engine import generate

        return generate(self, prompts, max_new_tokens=max_new_tokens, sampling=sampling, stop_tokens=stop_tokens,
                        **kwargs)

    def chat(self, messages, **kwargs):
        """One parsed assistant reply (reasoning, content, tool_calls, usage); see `qwen3_jax.generate.chat.chat`."""
        from qwen3_jax.generate.chat import chat

        return chat(self, messages, **kwargs)

    def chat_stream(self, messages, **kwargs):
        """Yields reply text as it is generated; see `qwen3_jax.generate.chat.chat_stream`."""
        from qwen3_jax.generate.chat import chat_stream

        return chat_stream(self, messages, **kwargs)

    def num_params(self) -> tuple[int, int]:
        """(total, active per token) parameter counts."""
        return param_count(self.config)

    def __repr__(self):
        total, active = self.num_params()
        return (f"Model({self.config.name or self.config.model_type}, {total / 1e9:.3f}B params"
                + (f", {active / 1e9:.3f}B active" if self.config.is_moe else "") + f", dtype={jnp.dtype(self.dtype).name})")


def _checkpoint_dtype(path: str) -> Any:
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        d = json.load(f)
    name = d.get("dtype") or d.get("torch_dtype") or "float32"
    return _DTYPES.get(name, jnp.float32)


DEMO = "demo"


def demo_dir() -> str:
    """The directory of the shipped demo model (`qwen3_jax.load("demo")`)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_model")


def load(path: str | os.PathLike, dtype: Any = "auto", *, mesh: Mesh | None = None, seed: int = 0,
         moe_impl: str = "auto", remat: str = "none", moe_capacity_factor: float | None = None,
         attention_impl: str = "xla", ring_layout: str = "contiguous", verify: bool = True) -> Model:
    """Loads a model.

    A model loaded from a directory keeps it as `model.source_dir` and reads the directory's
    tokenizer.json as `model.tokenizer`, so `model.chat` behaves as `qwen3-jax chat` does.

    Args:
      path: a Hugging Face checkpoint directory (config.json + model.safetensors or a sharded
        index), "demo" (the small arithmetic hybrid-thinking model in `qwen3_jax/demo_model/`, once
        installed), an Orbax directory written by `qwen3-jax convert`, or a preset name ("Qwen3-0.6B",
        "qwen3-30b-a3b", "tiny-moe", ...), which gives random weights for demos and benchmarks.
      dtype: compute and param dtype; "auto" uses the checkpoint's dtype (float32 for presets).
      mesh: optional mesh (see `make_mesh`); params are placed by the logical rules.
      seed: seed of the random weights of a preset.
      moe_impl: expert computation ("auto", "tiled", "ragged", "dense").
      remat: rematerialisation policy for training.
      moe_capacity_factor: expert-parallel capacity (None = dropless; see `model.moe`).
      attention_impl: "xla" (plain XLA attention), "flash" (the Pallas kernels on TPU, cuDNN on GPU),
        "ring" (ring attention over the mesh's `sequence` axis) or "auto" (ring when the mesh has
        sequence > 1, else flash on TPU/GPU, else xla); decided by the platform of the mesh's
        devices (see `model.attention_impl`).
      ring_layout: "contiguous" or "zigzag" token order with "ring" (see `model.transformer.Qwen3`).
      verify: check the weights as they are read: against the stored checksums for an Orbax
        directory, for NaN/Inf values in a HF checkpoint. False skips it (faster on big models).
    """
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        raise ValueError(f"load: path must be a checkpoint directory or a preset name (a str or os.PathLike), "
                         f"got {type(path).__name__} {path!r:.60}")
    path = os.fspath(path)
    resolve_attention(attention_impl, mesh)  # a bad name fails before any weights are read
    if path == DEMO:  # the small hybrid-thinking model installed in the package (experiments/hybrid_thinking)
        path = demo_dir()
        if not os.path.exists(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"no demo model is installed in {path}; build it with "
                                    "experiments/hybrid_thinking/run.py --ship")
    opts = dict(mesh=mesh, moe_impl=moe_impl, remat=remat, moe_capacity_factor=moe_capacity_factor,
                attention_impl=attention_impl, ring_layout=ring_layout)
    from qwen3_jax.checkpoint import orbax_io

    if orbax_io.is_orbax_dir(path):  # written by `qwen3-jax convert`: restored straight into the mesh layout
        cfg, params = orbax_io.restore(path, mesh=mesh, dtype=None if dtype == "auto" else jnp.dtype(_dtype(dtype)),
                                       verify=verify)
        dt = params["embed_tokens"]["embedding"].dtype if dtype == "auto" else _dtype(dtype)
        return Model(cfg, params, dtype=dt, source_dir=path, **opts)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{path} is a directory but holds no config.json (not a HF checkpoint)")
        cfg = Qwen3Config.from_json_file(os.path.join(path, "config.json"))
        dt = _checkpoint_dtype(path) if dtype == "auto" else _dtype(dtype)
        host = load_hf_params(path, cfg, dtype=jnp.dtype(dt), check_finite=verify)
        # With a mesh, each device receives only its slice of the host arrays.
        params = jax.tree.map(jnp.asarray, host) if mesh is None else shard_params(host, cfg, mesh)
        return Model(cfg, params, dtype=dt, source_dir=path, **opts)
    try:
        cfg = get_preset(path)
    except KeyError:
        raise FileNotFoundError(
            f"{path!r} is neither a checkpoint directory nor a preset (presets: {', '.join(PRESETS)})") from None
    dt = jnp.float32 if dtype == "auto" else _dtype(dtype)
    return Model(cfg, init_params(cfg, seed, dt, mesh), dtype=dt, **opts)
