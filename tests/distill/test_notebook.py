"""notebooks/02_fit_macro_model.py executes top to bottom in quick mode."""

from __future__ import annotations

import os

import pytest


def test_fit_notebook_runs_quick(repo_root, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    nb = jupytext.read(repo_root / "notebooks" / "02_fit_macro_model.py")
    assert "QUICK = os.environ.get" in nb.cells[0].source and "parameters" in nb.cells[0].metadata.get("tags", [])
    monkeypatch.setenv("RMAAT_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(repo_root), os.environ.get("PYTHONPATH", "")]))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(repo_root)}})
    client.execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "chosen:" in text and "within 1 stderr:" in text and "RF(t,  8)" in text
    assert "elasticity" in text
