"""notebooks/quickstart.ipynb runs headless on CPU (nbclient), every cell without error."""

import os
import sys
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel nbclient starts; all three are in the test extra)
import nbclient
import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel is this interpreter (the venv), with the test session's 8 CPU devices.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "sharded == single device: True" in outputs
    assert "non-thinking" in outputs


def _install_cell() -> str:
    return "".join(nbformat.read(NOTEBOOK, as_version=4).cells[1].source)


def _pins() -> list[str]:
    """install_requires of setup.cfg, as a wheel's metadata lists them, plus an extra's line."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(NOTEBOOK.parents[1] / "setup.cfg")
    return [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()] + [
        'libtpu==0.0.42.*; extra == "tpu"']


def test_install_cell_uses_the_users_copy_and_says_what_it_needs():
    install = _install_cell()
    assert "github.com" not in install  # no invented repository
    assert "/content/qwen3_jax" in install and ".whl" in install and "QWEN3_JAX_SOURCE" in install
    tested = {name: pin for name, pin in (r.split("==") for r in _pins()[:-1] if "==" in r)}
    for name in ("jax", "flax", "orbax-checkpoint"):  # the comment states the tested versions
        assert f"{name} {tested[name]}" in install, name


@pytest.mark.parametrize("runtime_jax, pinned_fit", [("same", True), ("0.7.2", False), ("0.7.2", True)])
def test_install_cell_in_a_simulated_colab_keeps_the_runtime_jax(tmp_path, monkeypatch, capsys, runtime_jax,
                                                                  pinned_fit):
    # The cell runs as on Colab, with pip and the installed-package metadata faked: jax and jaxlib are
    # never asked of pip, they are held by a constraint at the runtime's versions, and a runtime jax
    # the pins do not fit gets flax/orbax that fit it, with a warning.
    import importlib.metadata
    import subprocess
    import tempfile
    import types

    pins = _pins()
    tested_jax = next(r for r in pins if r.startswith("jax==")).split("==")[1]
    jax_version = tested_jax if runtime_jax == "same" else runtime_jax
    versions = {"jax": jax_version, "jaxlib": jax_version, "flax": "9.9", "orbax-checkpoint": "9.8"}
    calls = []

    def fake_run(args, check=False, **kw):
        calls.append(list(args))
        pinned = any(a.startswith("flax==") for a in args)
        rc = 1 if pinned and not pinned_fit else 0
        if check and rc:
            raise subprocess.CalledProcessError(rc, args)
        return subprocess.CompletedProcess(args, rc)

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setenv("QWEN3_JAX_SOURCE", str(tmp_path / "qwen3_jax-0.1.0-py3-none-any.whl"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: versions[name])
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: pins if name == "qwen3_jax" else None)
    exec(compile(_install_cell(), "install-cell", "exec"), {})
    out = capsys.readouterr().out

    assert calls[0][-2:] == ["--no-deps", str(tmp_path / "qwen3_jax-0.1.0-py3-none-any.whl")]
    keep = str(tmp_path / "keep_jax.txt")
    assert (tmp_path / "keep_jax.txt").read_text() == f"jax=={jax_version}\njaxlib=={jax_version}\n"
    named = [a.split("=")[0].split(">")[0] for c in calls[1:] for a in c[c.index(keep) + 1:]]
    assert all(c[c.index("-c") + 1] == keep for c in calls[1:]) and len(calls) == (2 if pinned_fit else 3)
    assert not {"jax", "jaxlib", "libtpu"} & set(named) and {"flax", "numpy", "orbax-checkpoint"} <= set(named)
    if not pinned_fit:  # the fallback leaves flax and orbax to pip, everything else as pinned
        assert "flax" in calls[2] and "orbax-checkpoint" in calls[2] and "numpy>=1.26" in calls[2]
    assert ("does not fit the tested flax/orbax-checkpoint pins" in out) == (not pinned_fit)
    assert (f"the runtime has jax {jax_version}" in out) == (runtime_jax != "same")
    assert "in Colab: True" in out


def test_install_cell_does_nothing_outside_colab(monkeypatch, capsys):
    import subprocess

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran outside Colab"))
    exec(compile(_install_cell(), "install-cell", "exec"), {})
    assert capsys.readouterr().out == "in Colab: False\n"
