"""A directory of text files: each file is one document (UTF-8; invalid bytes become U+FFFD)."""

from __future__ import annotations


class TextFilesSource:
    """Random-access texts, one per file (grain `RandomAccessDataSource`)."""

    def __init__(self, files: list[str]):
        self._files = list(files)

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> str:
        with open(self._files[index], encoding="utf-8", errors="replace") as f:
            return f.read()

    def __repr__(self) -> str:
        return f"TextFilesSource({len(self._files)} files)"
