"""The tokenizer of a training run: recorded in its run directory, read back by `qwen3-jax export`.

A run writes the tokenizer it encodes its data with into RUN_DIR as `tokenizer.json` and
`tokenizer_config.json` (`Tokenizer.save`: the released checkpoints' layout, chat template
included) before its first step. So the Hugging Face directory that `qwen3-jax export RUN_DIR`
writes carries the tokenizer its weights were trained with, and a later stage started with
`--init-from RUN_DIR` finds it (`post.sft.load_tokenizer`).

A run directory from before runs recorded their tokenizer is read through its stored config
(`recover`): the `tokenizer` directory named by an SFT data section or a GRPO / distillation
section, when it still holds a tokenizer.json; for a pretraining data section (`data.sources`),
the Qwen3 tokenizer, the only one the pretraining pipeline encodes with (`train.loop.build_run_data`),
when it fits the model's vocabulary. Anything else (an SFT run that took its init checkpoint's
tokenizer, batches fed through `train(data=...)`) is not recoverable.
"""

from __future__ import annotations

import os

import jax
import yaml

TOKENIZER_FILE = "tokenizer.json"


def record(run_dir: str | os.PathLike, tokenizer) -> None:
    """Writes `tokenizer`'s files into the run directory (process 0 only; atomic per file)."""
    if tokenizer is None or jax.process_index() != 0:
        return
    tokenizer.save(run_dir)


def _read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return {}
    return d if isinstance(d, dict) else {}


def recover(run_dir: str | os.PathLike):
    """The tokenizer a run used, from the run directory.

    Returns:
      (tokenizer, where it came from) or (None, why there is none).
    """
    from qwen3_jax.post.rl_loop import POST_CONFIG
    from qwen3_jax.text.tokenizer import Tokenizer
    from qwen3_jax.train.loop import RUN_CONFIG

    run_dir = os.fspath(run_dir)
    if os.path.isfile(os.path.join(run_dir, TOKENIZER_FILE)):
        return Tokenizer.from_pretrained(run_dir), "recorded by the run"
    cfg = _read_yaml(os.path.join(run_dir, RUN_CONFIG))
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    named = data.get("tokenizer") or _read_yaml(os.path.join(run_dir, POST_CONFIG)).get("tokenizer")
    if named:
        if os.path.isfile(os.path.join(os.fspath(named), TOKENIZER_FILE)):
            return Tokenizer.from_pretrained(named), f"{named}, named by the run's config"
        return None, f"the run's config names the tokenizer {named}, which holds no {TOKENIZER_FILE} now"
    if "sources" in data:
        from qwen3_jax.train.checkpoint import run_model_config

        tok = Tokenizer.qwen3()
        vocab = run_model_config(run_dir).vocab_size
        if len(tok) > vocab:
            return None, (f"the run predates recorded tokenizers and its vocabulary ({vocab}) is smaller than "
                          f"the Qwen3 tokenizer's ({len(tok)}) that the pretraining pipeline uses")
        return tok, "the Qwen3 tokenizer of the pretraining pipeline"
    return None, "the run recorded no tokenizer and its config names none"
