"""Writing an output directory so that it exists only once it is complete.

Everything is written into a hidden temporary directory next to the output
(`.NAME.tmp-PID`), which is renamed into place at the end. A crash or SIGKILL therefore leaves
at most that hidden directory, never something at the output path that looks finished. With
`force`, an existing output is moved aside only after the new one is complete, then deleted.
Temporary directories left by dead processes are removed on the next run.

Ctrl-C (SIGINT) inside `staged_directory` is deferred to safe points: the writer calls
`poll_interrupt()` between tensors, which raises KeyboardInterrupt there, and the temporary
directory is removed. Stopping at an arbitrary bytecode instead could leave Orbax's writer threads
filling the directory after it was deleted (it then survived until the next run). A second Ctrl-C
stops at once; the removal and the final renames are never interrupted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
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


def check_not_overlapping(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Refuses an output directory that is, contains or lies inside the source (symlinks resolved).

    Replacing such a directory with `--force` would delete the source, or write into it.
    """
    s, d = os.path.realpath(os.fspath(src)), os.path.realpath(os.fspath(dst))
    if d == s:
        raise FileExistsError(f"the output {dst} is the source {src}; choose another output directory")
    if d.startswith(s.rstrip(os.sep) + os.sep):
        raise FileExistsError(f"the output {dst} lies inside the source {src}; choose a directory outside it")
    if s.startswith(d.rstrip(os.sep) + os.sep):
        raise FileExistsError(f"the output {dst} contains the source {src}; replacing it would delete the source")


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


class _DeferredInterrupt:
    """SIGINT handler that records the first Ctrl-C and raises on the second (unless shielded)."""

    def __init__(self):
        self.pending = False
        self.shielded = False

    def __call__(self, signum, frame):
        if self.pending and not self.shielded:
            raise KeyboardInterrupt
        self.pending = True


_ACTIVE: list[_DeferredInterrupt] = []


def poll_interrupt() -> None:
    """Raises KeyboardInterrupt if Ctrl-C was pressed inside `staged_directory` (call at safe points)."""
    if _ACTIVE and _ACTIVE[-1].pending and not _ACTIVE[-1].shielded:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _defer_sigint() -> Iterator[_DeferredInterrupt]:
    state = _DeferredInterrupt()
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield state
        return
    old = signal.signal(signal.SIGINT, state)
    _ACTIVE.append(state)
    try:
        yield state
    finally:
        _ACTIVE.pop()
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def staged_directory(dst: str | os.PathLike, force: bool = False) -> Iterator[str]:
    """Yields a temporary directory that becomes `dst` when the block finishes without error.

    Args:
      dst: the final output directory.
      force: replace an existing `dst` (only after the new one is complete).

    Raises:
      FileExistsError: `dst` exists and `force` is False.
      PermissionError: the output directory cannot be created there (read-only, not a directory, ...).
    """
    dst = check_output(dst, force)
    parent, name = os.path.split(dst)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    with _defer_sigint() as interrupt:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            os.makedirs(parent, exist_ok=True)
            os.mkdir(tmp)
        except OSError as e:  # read-only, permission denied, a file where a directory should be, ...
            raise PermissionError(f"cannot create the output {dst}: cannot write into {parent} ({e.strerror})") \
                from None
        try:
            yield tmp
            poll_interrupt()  # pressed during the last step: still an interrupt, nothing is kept
        except BaseException:
            interrupt.shielded = True
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        interrupt.shielded = True
        try:
            # The output may have appeared while we worked (another run): honour `force` again.
            check_output(dst, force)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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
