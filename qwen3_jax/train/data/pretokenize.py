"""Tokenize a text source once into ArrayRecord files (the "array_record" source kind).

    pretokenize(SourceConfig(path="corpus/", kind="jsonl"), "corpus_tok/", tokenizer)

writes `corpus_tok/part-NNNNN.array_record` (each record one document's int32 ids, no EOS; the
pipeline appends it) and `manifest.json`, in the source's document order, into a temporary sibling
directory renamed at the end: an interrupted run leaves no partial output. The pipeline reading
the result with the same seed gives the same batches as reading the text source.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from qwen3_jax.train.data.arrayrecord import write_tokenized
from qwen3_jax.train.data.config import DataError, SourceConfig
from qwen3_jax.train.data.files import resolve_files


def _encode_all(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    batch = getattr(tokenizer, "encode_batch", None)
    return batch(texts) if batch is not None else [tokenizer.encode(t) for t in texts]


def pretokenize(src: SourceConfig, out_dir: str | os.PathLike, tokenizer: Any, *,
                docs_per_file: int = 100_000, batch: int = 512, progress: bool = False) -> dict:
    """Writes the source's documents as token ids; returns the manifest written.

    Raises:
      DataError: the source is already pre-tokenized, or has no files / no text field.
      FileExistsError: `out_dir` exists and is not empty.
    """
    from qwen3_jax.train.data.pipeline import open_source  # pipeline imports this package's siblings

    if src.kind == "array_record":
        raise DataError(f"data source {src.path}: already pre-tokenized (kind array_record)")
    if docs_per_file < 1 or batch < 1:
        raise DataError(f"docs_per_file and batch must be >= 1, got {docs_per_file} and {batch}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory")
    source = open_source(src, resolve_files(src))
    n = len(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    from tqdm import tqdm

    bar = tqdm(total=n, unit="doc", desc=f"pretokenize {src.label}", disable=not progress)
    tokens, files = 0, []
    try:
        for part, start in enumerate(range(0, n, docs_per_file)):
            stop = min(start + docs_per_file, n)

            def docs():
                nonlocal tokens
                for lo in range(start, stop, batch):
                    ids = _encode_all(tokenizer, [source[i] for i in range(lo, min(lo + batch, stop))])
                    tokens += sum(map(len, ids))
                    bar.update(len(ids))
                    yield from ids

            name = f"part-{part:05d}.array_record"
            write_tokenized(tmp / name, docs())
            files.append(name)
        manifest = {"source": dataclasses.asdict(src), "documents": n, "tokens": tokens,
                    "files": files, "vocab_size": len(tokenizer) if hasattr(tokenizer, "__len__") else None}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        bar.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest
