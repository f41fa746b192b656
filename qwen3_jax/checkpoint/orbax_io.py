"""Our Orbax checkpoint directory: write it one parameter at a time, restore it (sharded or not).

Layout of a converted directory:

    ckpt/
      params/                 Orbax PyTree checkpoint of the stacked params (OCDBT + zarr3)
      qwen3_config.json       `Qwen3Config.to_dict()`
      checksums.json          CRC-32 of every stored array's bytes (C order, stored dtype)
      tokenizer.json, ...     copied from the source, with generation_config.json

`params/` is written with Orbax's partial save (`orbax.checkpoint.v1.partial`): each call adds
one stacked parameter to a pending checkpoint and `finalize` commits it, so the writer holds one
parameter at a time (peak: that array plus TensorStore's chunk buffers for it, about twice its
size; see experiments/bench_convert_memory.py). The result is an ordinary PyTree checkpoint: `ocp.v1.load(ckpt/params,
abstract)` and the v0 `ocp.StandardCheckpointer().restore(ckpt/params/state, abstract)` both
read it. Arrays are stored uncompressed (weights barely compress) in chunks of at most
`CHUNK_BYTES`, so a device restoring onto a mesh reads its own slices, not whole tensors.

Integrity: Orbax stores no checksum of the array data, so a flipped byte would load silently.
`ParamWriter` records a CRC-32 of every array as it is saved; `restore` and `restore_param`
compare it after reading (`verify=False` skips that, about 0.5-1 s per GB on one core). A
directory written before checksums existed restores with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
import zlib
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, SingleDeviceSharding

from qwen3_jax.checkpoint.hf_mapping import param_shapes
from qwen3_jax.checkpoint.safetensors_io import CheckpointError
from qwen3_jax.config import Qwen3Config
from qwen3_jax.sharding.placement import param_shardings

PARAMS_DIR = "params"
CONFIG_FILE = "qwen3_config.json"
CHUNK_BYTES = 64 * 2**20
CHECKSUM_FILE = "checksums.json"

Path = tuple[str, ...]


def _ocp():
    # Imported lazily: orbax pulls in a lot, and `is_orbax_dir` must stay cheap for `load()`.
    from orbax.checkpoint import v1 as ocp

    _drop_closed_loop_noise()
    return ocp


def _drop_closed_loop_noise() -> None:
    """Keeps Orbax's late callbacks from printing a traceback after a failed read.

    When a read of a damaged checkpoint fails, Orbax closes its (uvloop) event loop while a worker
    thread still holds a future whose completion posts to that loop; the post raises
    `RuntimeError: Event loop is closed` in a context nobody can catch, and Python prints it through
    `sys.unraisablehook` under our one-line error. Only that exact message is dropped; every other
    unraisable exception reaches the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_qwen3_jax", False):
        return

    def hook(info):
        if isinstance(info.exc_value, RuntimeError) and str(info.exc_value) == "Event loop is closed":
            return
        previous(info)

    hook._qwen3_jax = True
    sys.unraisablehook = hook


def _save_context():
    ctx = _ocp().Context()
    ctx.array.saving.use_compression = False
    ctx.array.saving.storage_options.chunk_byte_size = CHUNK_BYTES
    # Orbax copies host arrays before an async write so callers may mutate them; every save here
    # is waited for before the array is touched again, so that copy would only double the peak.
    ctx.memory.deepcopy_host_arrays = False
    return ctx


def _load_context(partial: bool):
    ctx = _ocp().Context()
    ctx.pytree.loading.partial_load = partial
    return ctx


@contextlib.contextmanager
def _quiet_orbax():
    """Silences Orbax's absl warnings (they print tracebacks) while reading: failures become our errors."""
    logs = [logging.getLogger(n) for n in ("absl", "asyncio")]
    levels = [g.level for g in logs]
    for g in logs:
        g.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for g, level in zip(logs, levels):
            g.setLevel(level)


def release_freed_memory() -> None:
    """Returns freed heap pages to the OS (glibc only; elsewhere a no-op).

    TensorStore encodes chunks in buffers taken from glibc's heap arenas; after a save they are
    free but stay resident, so without a trim each param's write leaves up to one more param's
    worth of RSS behind (measured: +128 MiB per 128 MiB param, gone after `malloc_trim`).
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim  # noqa: B018  (raises AttributeError on a libc without it)
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


def _nest(flat: dict[Path, Any]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = v
    return tree


def _flatten(tree, prefix: Path = ()) -> dict[Path, Any]:
    if isinstance(tree, dict) or (hasattr(tree, "items") and not hasattr(tree, "shape")):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, prefix + (str(k),)))
        return out
    return {prefix: tree}


def params_dir(path: str | os.PathLike) -> str:
    """The absolute path of `path/params`.

    Orbax needs absolute paths: given a relative one, its metadata reader returns None for every
    array (and restoring then fails far from the cause).
    """
    return os.path.join(os.path.abspath(os.fspath(path)), PARAMS_DIR)


def is_orbax_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory written by `qwen3-jax convert` (params/ + qwen3_config.json)."""
    path = os.fspath(path)
    return os.path.isdir(os.path.join(path, PARAMS_DIR)) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def checksum(array) -> int:
    """CRC-32 of an array's bytes in C order (a jax.Array is first gathered to the host)."""
    host = np.ascontiguousarray(np.asarray(array))
    return zlib.crc32(host.reshape(-1).view(np.uint8))


def read_checksums(path: str | os.PathLike) -> dict[Path, int] | None:
    """The stored checksums of a converted directory, or None when it has none."""
    p = os.path.join(os.path.abspath(os.fspath(path)), CHECKSUM_FILE)
    if not os.path.exists(p):
        return None
    try:
        with open(p, encoding="utf-8") as f:
            data = json.load(f)
        return {tuple(k.split("/")): int(v) for k, v in data["crc32"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{p}: unreadable checksum file ({type(e).__name__}: {e})") from None


def verify_checksum(path: str | os.PathLike, param: Path, array, sums: dict[Path, int] | None) -> None:
    """Raises CheckpointError when `array` does not match the checksum stored for `param`, or when
    the directory has a checksum table (`sums`) without an entry for `param` (a table with a hole
    would let that array's damage through). `sums` None: a directory from before checksums."""
    if sums is None:
        return
    if param not in sums:
        raise CheckpointError(f"{path}: {CHECKSUM_FILE} has no checksum for {'/'.join(param)}, so its data "
                              f"cannot be verified; convert the checkpoint again (or skip the check: "
                              f"verify=False, --no-verify)")
    got = checksum(array)
    if got != sums[param]:
        raise CheckpointError(f"{path}: stored data of {'/'.join(param)} is corrupt (CRC-32 {got:#010x}, "
                              f"expected {sums[param]:#010x}); convert the checkpoint again")


def _warn_unverified(path) -> None:
    warnings.warn(f"{path} has no {CHECKSUM_FILE} (written by an older qwen3-jax): its data cannot be verified",
                  stacklevel=3)


class ParamWriter:
    """Adds stacked params one by one to `directory/params`, then commits them with `finalize`.

    Also records each array's checksum and writes them to `directory/checksums.json` on `finalize`.

    Args:
      directory: the (temporary) output directory; `params/` must not exist yet.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.path.abspath(os.fspath(directory))
        self.target = params_dir(directory)
        self.written: list[Path] = []
        self.checksums: dict[Path, int] = {}

    def save(self, path: Path, array, crc: int | None = None) -> None:
        """Writes one param (NumPy or jax.Array; a sharded array keeps its layout) and waits for it.

        `crc` is the array's `checksum` when the caller already has it (computed here otherwise).
        """
        self.checksums[path] = checksum(array) if crc is None else int(crc)
        with _save_context():
            _ocp().partial.save(self.target, _nest({path: array}))
        self.written.append(path)
        release_freed_memory()

    def finalize(self) -> None:
        """Commits the pending partial checkpoint to `params/` and writes the checksums."""
        with _save_context():
            _ocp().partial.finalize(self.target)
        with open(os.path.join(self.directory, CHECKSUM_FILE), "w", encoding="utf-8") as f:
            json.dump({"crc32": {"/".join(p): c for p, c in self.checksums.items()}}, f, indent=1)


def write_config(directory: str | os.PathLike, cfg: Qwen3Config) -> None:
    """Writes `cfg` as `qwen3_config.json` (our field names, so nothing is lost in translation)."""
    with open(os.path.join(os.fspath(directory), CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(cfg.to_dict(), f, indent=2)


def read_config(path: str | os.PathLike) -> Qwen3Config:
    """The `Qwen3Config` stored in a converted directory."""
    p = os.path.join(os.fspath(path), CONFIG_FILE)
    try:
        with open(p, encoding="utf-8") as f:
            return Qwen3Config.from_dict(json.load(f))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no {CONFIG_FILE} (not a qwen3-jax Orbax checkpoint)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p} is not valid JSON: {e}") from None


def saved_params(path: str | os.PathLike) -> dict[Path, tuple[tuple[int, ...], np.dtype]]:
    """Param path -> (shape, dtype) as stored, read from the Orbax metadata (no array data)."""
    p = params_dir(path)
    try:
        with _quiet_orbax():
            meta = _ocp().metadata(p).metadata
    except Exception as e:  # orbax raises assorted types for a damaged or foreign directory
        raise CheckpointError(f"{p}: cannot read the Orbax checkpoint metadata ({type(e).__name__}: {e})") from None
    flat = _flatten(meta) if meta is not None else {}
    unreadable = [k for k, v in flat.items() if v is None]
    if not flat or unreadable:
        what = ", ".join("/".join(k) for k in unreadable[:4]) or "every array"
        raise CheckpointError(f"{p}: cannot read the metadata of {what} (files of the Orbax checkpoint are "
                              "missing or damaged)")
    return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in flat.items()}


def check_params(path: str | os.PathLike, cfg: Qwen3Config) -> dict[Path, tuple[tuple[int, ...], np.dtype]]:
    """Compares the stored params with `cfg`; raises one CheckpointError listing every problem."""
    return check_saved(path, saved_params(path), cfg)


def check_saved(path, saved: dict[Path, tuple[tuple[int, ...], np.dtype]], cfg: Qwen3Config):
    """`check_params` on a given path -> (shape, dtype) table (e.g. a training checkpoint's)."""
    want = param_shapes(cfg)
    problems = [f"  missing: {'/'.join(p)}" for p in want if p not in saved]
    problems += [f"  unexpected: {'/'.join(p)}" for p in saved if p not in want]
    problems += [f"  wrong shape: {'/'.join(p)} is {list(saved[p][0])}, config expects {list(s)}"
                 for p, s in want.items() if p in saved and saved[p][0] != tuple(s)]
    if problems:
        raise CheckpointError(f"{path}: stored params do not match {CONFIG_FILE} ({len(problems)} problems):\n"
                              + "\n".join(problems))
    return saved


def _target_shardings(cfg: Qwen3Config, mesh: Mesh | None) -> dict[Path, Any]:
    if mesh is None:
        one = SingleDeviceSharding(jax.devices()[0])
        return {p: one for p in param_shapes(cfg)}
    flat = jax.tree_util.tree_leaves_with_path(param_shardings(cfg, mesh))
    return {tuple(str(getattr(k, "key", k)) for k in kp): s for kp, s in flat}


def _load(path, abstract, partial: bool):
    try:
        with _load_context(partial), _quiet_orbax():
            return _ocp().load(params_dir(path), abstract)
    except Exception as e:  # orbax raises assorted types for missing or damaged files
        raise CheckpointError(f"{path}: cannot restore the Orbax checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); is it complete?") from None


def restore(path: str | os.PathLike, mesh: Mesh | None = None, dtype: Any = None,
            verify: bool = True) -> tuple[Qwen3Config, dict]:
    """Restores a converted directory.

    Args:
      path: directory written by `qwen3-jax convert`.
      mesh: optional mesh; each param is restored straight into its `param_shardings` layout, so
        every device reads only its own slices. Without a mesh, params land on the first device.
      dtype: param dtype; None keeps the stored dtypes (Orbax casts while reading otherwise).
      verify: compare every array with its stored checksum (when the restored arrays are cast or
        not all addressable here, the stored arrays are read once more, one at a time, to check).

    Returns:
      (config, params) with params a nested dict of jax.Arrays.
    """
    path = os.fspath(path)
    cfg = read_config(path)
    saved = check_params(path, cfg)
    shardings = _target_shardings(cfg, mesh)
    abstract = {p: jax.ShapeDtypeStruct(shape, np.dtype(dtype) if dtype is not None else dt, sharding=shardings[p])
                for p, (shape, dt) in saved.items()}
    params = _load(path, _nest(abstract), partial=False)
    if verify:
        sums = read_checksums(path)
        if sums is None:
            _warn_unverified(path)
        flat = _flatten(params)
        for p, (shape, dt) in saved.items():
            x = flat[p]
            same = dtype is None or np.dtype(dtype) == dt
            if not (same and getattr(x, "is_fully_addressable", True)):
                x = restore_param(path, p, shape, dt, verify=False)
            verify_checksum(path, p, x, sums)
            del x
    return cfg, params


def restore_param(path: str | os.PathLike, param: Path, shape, dtype, verify: bool = True,
                  checksums: dict[Path, int] | None = None) -> np.ndarray:
    """Reads one stored param into host memory (for export, which streams param by param).

    With `verify`, it is compared with its checksum (`checksums`, read from the directory when None).
    """
    # A NumPy leaf as the target makes Orbax return NumPy, skipping a device copy; np.empty only
    # reserves address space, so it costs no resident memory.
    abstract = _nest({param: np.empty(tuple(shape), np.dtype(dtype))})
    tree = _load(path, abstract, partial=True)
    release_freed_memory()
    out = np.asarray(_flatten(tree)[param])
    if verify:
        verify_checksum(path, param, out, read_checksums(path) if checksums is None else checksums)
    return out
