"""notebooks/quickstart.ipynb runs headless on CPU (nbclient), every cell without error."""

import os
import sys
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel nbclient starts; all three are in the test extra)
import nbclient
import nbformat

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


def test_install_cell_uses_the_users_copy_and_keeps_the_runtime_jax():
    import json
    import pathlib

    nb = json.loads((pathlib.Path(__file__).parents[2] / "notebooks" / "quickstart.ipynb").read_text())
    install = "".join(nb["cells"][1]["source"])
    assert "github.com" not in install  # no invented repository
    assert "/content/qwen3_jax" in install and ".whl" in install and "QWEN3_JAX_SOURCE" in install
    assert "'-c', '/tmp/keep_jax.txt'" in install and "version('jax')" in install
