"""notebooks/01_simulate_astrocyte_ltp.py executes top to bottom in quick mode."""

from __future__ import annotations

import os

import pytest


def test_notebook_01_runs_in_quick_mode(repo_root, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    nb = jupytext.read(repo_root / "notebooks" / "01_simulate_astrocyte_ltp.py")
    assert "QUICK = os.environ.get(\"RMAAT_QUICK\", \"0\") == \"1\"" in nb.cells[0].source
    monkeypatch.setenv("RMAAT_QUICK", "1")
    monkeypatch.setenv("RMAAT_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(repo_root), os.environ.get("PYTHONPATH", "")]))
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(repo_root)}}).execute()
    assert (tmp_path / "sim" / "meta.json").is_file()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "ratio" in text and "deviation" in text
