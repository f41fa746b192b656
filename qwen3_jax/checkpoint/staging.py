"""Writing an output directory so that it exists only once it is complete.

Everything is written into a hidden temporary directory next to the output
(`.NAME.tmp-PID`), which is renamed into place at the end. A crash or SIGKILL therefore leaves
at most that hidden directory, never something at the output path that looks finished. With
`force`, an existing output is moved aside only after the new one is complete, then deleted.
Temporary directories left by dead processes are removed on the next run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from typing import Iterator

_TMP = re.compile(r"^\.(?P<name>.+)\.(tmp|old)-(?P<pid>\d+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_stale(parent: str, name: str) -> None:
    """Cleans up after an earlier run of `name` whose process is gone.

    Its temp dir is deleted. A `.old` dir means it died between moving the old output aside and
    renaming the new one into place: the old output is put back (or deleted if a new one is there).
    """
    for entry in sorted(os.listdir(parent), key=lambda e: ".old-" not in e):  # restores first
        m = _TMP.match(entry)
        if not m or m.group("name") != name or _alive(int(m.group("pid"))):
            continue
        path, dst = os.path.join(parent, entry), os.path.join(parent, name)
        if ".old-" in entry and not os.path.lexists(dst):
            os.rename(path, dst)
        else:
            shutil.rmtree(path, ignore_errors=True)


def check_output(dst: str | os.PathLike, force: bool) -> str:
    """Raises FileExistsError unless `dst` is absent or `force` is set; returns its absolute path.

    First cleans up after interrupted earlier runs (see `_remove_stale`), which may put a
    previous output back in place.
    """
    dst = os.path.abspath(os.fspath(dst))
    parent, name = os.path.split(dst)
    if os.path.isdir(parent):
        _remove_stale(parent, name)
    if os.path.lexists(dst) and not force:
        raise FileExistsError(f"{dst} already exists; pass --force to replace it")
    if os.path.lexists(dst) and not os.path.isdir(dst):
        raise FileExistsError(f"{dst} exists and is not a directory; refusing to replace it")
    return dst


@contextlib.contextmanager
def staged_directory(dst: str | os.PathLike, force: bool = False) -> Iterator[str]:
    """Yields a temporary directory that becomes `dst` when the block finishes without error.

    Args:
      dst: the final output directory.
      force: replace an existing `dst` (only after the new one is complete).

    Raises:
      FileExistsError: `dst` exists and `force` is False.
    """
    dst = check_output(dst, force)
    parent, name = os.path.split(dst)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # The output may have appeared while we worked (another run): honour `force` again.
    check_output(dst, force)
    if os.path.lexists(dst):
        old = os.path.join(parent, f".{name}.old-{os.getpid()}")
        os.rename(dst, old)
        os.rename(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, dst)


# Tokenizer and generation files copied alongside the weights (whichever exist).
AUX_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
             "added_tokens.json", "generation_config.json", "chat_template.jinja")


def copy_aux_files(src: str, dst: str) -> list[str]:
    """Copies the tokenizer files and generation_config.json that exist in `src`; returns their names."""
    copied = []
    for f in AUX_FILES:
        p = os.path.join(src, f)
        if os.path.isfile(p):
            shutil.copy2(p, os.path.join(dst, f))
            copied.append(f)
    return copied
