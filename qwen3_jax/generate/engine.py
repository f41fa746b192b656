"""Batched generation on a `qwen3_jax.Model`: padding, bucketing, compiled prefill and decode.

    engine = Engine.for_model(model)
    result = engine.generate([[1, 2, 3], [4, 5]], max_new_tokens=32, sampling=GREEDY, stop_tokens=[])
    result.tokens        # the new ids of each row (a stop token, when one ended the row, included)

Compiles are bounded: the batch, the prompt length, the cache length and the output buffer are
each rounded up to a bucket (powers of two, then multiples of 512), so a new prompt length reuses
an existing program most of the time. `Engine.start` returns a `Run` that can be advanced a few
tokens at a time (streaming) with the same compiled decode loop.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qwen3_jax.generate import loop
from qwen3_jax.generate.forward import LAYOUTS
from qwen3_jax.text.ids import prompt_batch, token_ids
from qwen3_jax.generate.sampling import Sampling, vocab_limit
from qwen3_jax.sharding.placement import mesh_context
from qwen3_jax.sharding.rules import batch_multiple
from qwen3_jax.sharding.platform import target_platform

# <|im_end|> ends a chat turn, <|endoftext|> a document (eos_token_id of the checkpoints' generation_config.json).
QWEN3_STOP_TOKENS = (151645, 151643)


class ContextError(ValueError):
    """A prompt does not fit the model's context or the cache."""


def bucket(n: int, minimum: int = 16) -> int:
    """Rounds n up to a power of two (>= minimum), or to a multiple of 512 above 1024."""
    n = max(int(n), minimum)
    if n <= 1024:
        return 1 << (n - 1).bit_length()
    return -(-n // 512) * 512


def default_stop_tokens(config, model_dir: str | os.PathLike | None = None) -> tuple[int, ...]:
    """The ids that end generation by default.

    `generation_config.json` of the checkpoint decides when present (its `eos_token_id`);
    otherwise the config's eos ids plus Qwen3's `<|im_end|>` and `<|endoftext|>` when they exist
    in the vocabulary.
    """
    if model_dir is not None:
        path = os.path.join(os.fspath(model_dir), "generation_config.json")
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{path}: not a readable JSON file ({e})") from None
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
            eos = data.get("eos_token_id")
            if eos is not None:
                ids = eos if isinstance(eos, list) else [eos]
                if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
                    raise ValueError(f"{path}: eos_token_id must be a token id or a list of them, got {eos!r}")
                return tuple(ids)
    eos = config.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else ([] if eos is None else [eos])
    ids += [i for i in QWEN3_STOP_TOKENS if i < config.vocab_size]
    return tuple(dict.fromkeys(int(i) for i in ids))


@dataclasses.dataclass(frozen=True)
class ThinkingBudget:
    """What the loop needs to cap the reasoning length.

    Attributes:
      budget: reasoning tokens allowed before the stop-thinking text is forced.
      forced: ids of the stop-thinking text (it must contain `</think>`).
      think_id, end_think_id: ids of `<think>` and `</think>`.
    """

    budget: int
    forced: tuple[int, ...]
    think_id: int
    end_think_id: int


@dataclasses.dataclass
class Result:
    """Output of `Engine.generate`.

    Attributes:
      tokens: new ids of each input row.
      finish_reasons: per row, "stop" (a stop token ended it) or "length".
      prompt_lengths: tokens in each prompt.
    """

    tokens: list[list[int]]
    finish_reasons: list[str]
    prompt_lengths: list[int]


class Run:
    """One batch being generated; `advance` decodes more tokens on device.

    Attributes:
      rows: number of real (unpadded) rows.
      spec: the compiled loop's static spec.
    """

    def __init__(self, engine: "Engine", state: dict, spec: loop.LoopSpec, rows: int, prompt_lengths: list[int]):
        self.engine, self.state, self.spec, self.rows = engine, state, spec, rows
        self.prompt_lengths = prompt_lengths
        self._host = None

    def _fetch(self):
        if self._host is None:
            # An explicit fetch: it passes `jax.transfer_guard_device_to_host("disallow")`, which RL
            # rollouts run under to show that the weights never leave the device.
            self._host = jax.device_get({k: self.state[k] for k in ("tokens", "n", "done")})
        return self._host

    @property
    def finished(self) -> bool:
        """True when every row has stopped."""
        return bool(self._fetch()["done"][: self.rows].all())

    def tokens(self) -> list[list[int]]:
        """The ids generated so far, per row."""
        h = self._fetch()
        return [h["tokens"][b, : h["n"][b]].tolist() for b in range(self.rows)]

    def advance(self, steps: int | None = None) -> "Run":
        """Decodes up to `steps` more tokens per row (all remaining ones when None)."""
        if self.finished:
            return self
        stop_at = np.int32(2**30 if steps is None else int(self.state["step"]) + steps)
        self.state = self.engine.decode(self.spec, self.state, stop_at)
        self._host = None
        return self

    def result(self) -> Result:
        """Tokens and finish reasons of the rows."""
        toks = self.tokens()
        stops = set(self.spec.stop_tokens)
        reasons = ["stop" if t and t[-1] in stops else "length" for t in toks]
        return Result(toks, reasons, list(self.prompt_lengths))


class Engine:
    """Compiled generation for one model (see the module docstring).

    Attributes:
      model: the `qwen3_jax.Model`.
      max_cache_length: most cache slots a row may use (defaults to the model's context).
      layout: "split" (per-layer copies of the layer weights, the fast decode on CPU; costs a second
        copy of them), "stacked" (the model's params as they are; see `forward.py`), or "auto":
        split on CPU only, so accelerators never hold the weights twice.
    """

    def __init__(self, model, max_cache_length: int | None = None, layout: str = "auto"):
        if layout == "auto":
            # The platform of the model's devices (its mesh), not the host's default backend.
            layout = "split" if target_platform(model.mesh) == "cpu" else "stacked"
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {list(LAYOUTS)}")
        self.model = model
        ctx = model.config.max_position_embeddings
        self.max_cache_length = min(ctx, max_cache_length) if max_cache_length else ctx
        if layout == "split":
            # q/k/v and gate/up as one product each, except under a mesh (see forward.py).
            single = model.mesh is None or model.mesh.devices.size == 1
            self.fwd = LAYOUTS[layout](model.module, fuse=single)
        else:
            self.fwd = LAYOUTS[layout](model.module)
        self._params = None
        self._prefill = jax.jit(self._prefill_impl, static_argnums=(0, 1, 2), compiler_options=self.fwd.prefill_options)
        self._decode = jax.jit(self._decode_impl, static_argnums=(0,), donate_argnums=(2,))

    @classmethod
    def for_model(cls, model) -> "Engine":
        """The engine cached on `model` (created on first use)."""
        eng = getattr(model, "_qwen3_jax_engine", None)
        if eng is None:
            eng = cls(model)
            model._qwen3_jax_engine = eng
        return eng

    # -------------------------------------------------------------- compiled parts
    @property
    def params(self):
        """The model's params in this engine's layout (prepared on first use)."""
        if self._params is None or self._params[0] is not self.model.params:
            with mesh_context(self.model.config, self.model.mesh):
                self._params = (self.model.params, self.fwd.prepare(self.model.params))
        return self._params[1]

    # Both are traced inside the caller's `mesh_context` (jax.set_mesh is entered outside jit), so
    # the model's logical constraints and the cache's see the mesh and the rules.
    def _prefill_impl(self, spec, cache_len, out_len, params, ids, lens, done, in_think, key, max_new, budget):
        return loop.prefill(self.fwd, self.model.config.vocab_size, spec, cache_len, out_len,
                            params, ids, lens, done, in_think, key, max_new, budget)

    def _decode_impl(self, spec, params, state, stop_at):
        return loop.decode(self.fwd, spec, params, state, stop_at)

    def decode(self, spec, state, stop_at):
        """Runs the compiled decode loop on `state` (donated) until `stop_at` steps."""
        with mesh_context(self.model.config, self.model.mesh):
            return self._decode(spec, self.params, state, stop_at)

    # -------------------------------------------------------------- host side
    def _batch_multiple(self) -> int:
        return 1 if self.model.mesh is None else batch_multiple(self.model.mesh)

    def check_fits(self, prompt_length: int) -> None:
        """Raises ContextError when a prompt leaves no room for one new token."""
        room = self.max_cache_length
        if prompt_length >= room:
            what = ("the model's context" if room == self.model.config.max_position_embeddings
                    else "the cache")
            raise ContextError(f"the prompt has {prompt_length} tokens, {prompt_length - room + 1} too many: "
                               f"{what} holds {room} tokens including at least one new token")

    def start(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 256, sampling: Sampling | None = None,
              stop_tokens: Sequence[int] | None = None, thinking: ThinkingBudget | None = None,
              tokenizer_size: int | None = None, model_dir=None) -> Run:
        """Prefills a batch and picks its first tokens; returns a `Run` to decode the rest.

        Args:
          prompts: token-id lists (different lengths allowed, each non-empty).
          max_new_tokens: most new tokens per row (clipped to what the context leaves).
          sampling: the setting; None is greedy.
          stop_tokens: ids that end a row; None uses `default_stop_tokens`, [] never stops early.
          thinking: optional thinking budget.
          tokenizer_size: ids of the tokenizer in use (ids at or above it are never sampled).
          model_dir: checkpoint directory, to read its generation_config.json.

        Returns:
          The run, after its first token.

        Raises:
          ValueError: bad prompts or arguments; ContextError when a prompt is too long.
        """
        cfg = self.model.config
        sampling = Sampling(temperature=0.0) if sampling is None else sampling
        prompts = prompt_batch(prompts, cfg.vocab_size)
        if (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral)
                or max_new_tokens < 1):
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if not isinstance(sampling, Sampling):
            raise ValueError(f"sampling must be a qwen3_jax.Sampling, got {type(sampling).__name__}")
        longest = max(len(p) for p in prompts)
        self.check_fits(longest)
        max_new = min(int(max_new_tokens), self.max_cache_length - longest)
        stops = (default_stop_tokens(cfg, model_dir) if stop_tokens is None
                 else tuple(token_ids(stop_tokens, "stop_tokens", cfg.vocab_size)))

        rows = len(prompts)
        mult = self._batch_multiple()
        B = -(-bucket(rows, 1) // mult) * mult
        T = bucket(longest)
        cache_len = bucket(T + max_new)
        out_len = bucket(max_new)
        ids = np.zeros((B, T), np.int32)
        lens = np.ones((B,), np.int32)
        done = np.ones((B,), bool)
        in_think = np.zeros((B,), bool)
        for b, p in enumerate(prompts):
            ids[b, : len(p)] = p
            lens[b], done[b] = len(p), False
            if thinking is not None:
                # A prompt that opened <think> without closing it starts the reply in reasoning.
                opened = max((i for i, t in enumerate(p) if t == thinking.think_id), default=-1)
                closed = max((i for i, t in enumerate(p) if t == thinking.end_think_id), default=-1)
                in_think[b] = opened > closed
        spec = loop.LoopSpec(
            sampling=sampling.static(), limit=vocab_limit(cfg.vocab_size, tokenizer_size), stop_tokens=stops,
            forced=thinking.forced if thinking else (), think_id=thinking.think_id if thinking else -1,
            end_think_id=thinking.end_think_id if thinking else -1)
        budget = np.int32(-1 if thinking is None else thinking.budget)
        with mesh_context(cfg, self.model.mesh):
            state = self._prefill(spec, cache_len, out_len, self.params, ids, lens, done, in_think,
                                  jax.random.key(sampling.seed), np.int32(max_new), budget)
        return Run(self, state, spec, rows, [len(p) for p in prompts])

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 256, sampling: Sampling | None = None,
                 stop_tokens: Sequence[int] | None = None, thinking: ThinkingBudget | None = None,
                 tokenizer_size: int | None = None, model_dir=None) -> Result:
        """Generates for a batch of prompts in one compiled loop; see `start` for the arguments."""
        run = self.start(prompts, max_new_tokens, sampling, stop_tokens, thinking, tokenizer_size, model_dir)
        return run.advance().result()

    def compiled_programs(self) -> int:
        """Number of distinct programs compiled so far (prefill + decode)."""
        return self._prefill._cache_size() + self._decode._cache_size()



def generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int = 256, sampling: Sampling | None = None,
             stop_tokens: Sequence[int] | None = None, tokenizer=None) -> list[list[int]]:
    """The new ids of each prompt (see `Engine.start`); greedy when `sampling` is None.

    Args:
      model: a `qwen3_jax.Model`.
      prompts: token-id lists.
      max_new_tokens: most new tokens per row.
      sampling: the setting (temperature 0 is greedy).
      stop_tokens: None: the default stop ids; []: never stop before max_new_tokens.
      tokenizer: when given (or attached as `model.tokenizer`), ids >= its size are never sampled.
    """
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    res = Engine.for_model(model).generate(prompts, max_new_tokens, sampling, stop_tokens,
                                           tokenizer_size=None if tok is None else len(tok),
                                           model_dir=getattr(model, "source_dir", None))
    return res.tokens
