"""Which files a source reads: a file, a directory searched recursively, or a glob."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from qwen3_jax.train.data import synthetic
from qwen3_jax.train.data.config import DataError, SourceConfig

DEFAULT_PATTERNS = {
    "jsonl": "*.jsonl",
    "parquet": "*.parquet",
    "text": "*.txt",
    "array_record": "*.array_record*",
}


def resolve_files(src: SourceConfig) -> list[str]:
    """The source's files, sorted (the order is part of the data order).

    Raises:
      DataError: the path does not exist or holds no matching non-empty file.
    """
    if src.path.startswith(synthetic.PREFIX):
        if src.kind != "jsonl":
            raise DataError(f"data source {src.path}: a synthetic source has kind 'jsonl', not {src.kind!r}")
        try:
            path = str(synthetic.resolve(src.path))
        except ValueError as e:
            raise DataError(str(e)) from None
    else:
        path = os.path.expanduser(src.path)
    pattern = src.pattern or DEFAULT_PATTERNS[src.kind]
    if os.path.isfile(path):
        files = [path]
    elif os.path.isdir(path):
        files = [str(p) for p in Path(path).rglob(pattern)
                 if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    elif glob.has_magic(path):
        files = [p for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
    else:
        raise DataError(f"data source {src.path}: path does not exist")
    files = sorted(f for f in files if os.path.getsize(f) > 0)
    if not files:
        raise DataError(f"data source {src.path}: no non-empty {pattern} files found")
    return files
