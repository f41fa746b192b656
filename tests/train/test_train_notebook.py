"""notebooks/train_tiny.ipynb runs headless on CPU (nbclient): trains, resumes, plots, generates."""

import os
import sys
from pathlib import Path

import pytest

import ipykernel  # noqa: F401  (the kernel nbclient starts; all three are in the test extra)
import nbclient
import nbformat

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "train_tiny.ipynb"


@pytest.mark.slow
def test_train_tiny_notebook_executes(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("QWEN3_JAX_NOTEBOOK_STEPS", "20")  # a few hundred by default
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOK.parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "resumed from step 10 -> step 20" in outputs
    assert "In the morning, Ana" in outputs
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
