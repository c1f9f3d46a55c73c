"""Every notebook in notebooks/ executes top to bottom in quick mode (RMAAT_QUICK=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))

#: text each notebook must print in quick mode: its science ran, not only its cells
EXPECTED_OUTPUT = {
    "01_simulate_astrocyte_ltp": ["monotone rise: True", "max |p_l(Brian2) - p_l(SciPy)|",
                                  "gliotransmitter releases:", "rho after the pairs:"],
    "02_fit_macro_model": ["chosen:", "within 1 stderr:", "RF(t,  8)", "elasticity"],
    "03_train_rmaat": ["ltp, integrating, post-LN (default)", "ltp, literal, post-LN", "by age:",
                       "TBPTT(1) test acc", "layout and reading: post integrating"],
}


def test_the_three_notebooks_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert {"01_simulate_astrocyte_ltp", "02_fit_macro_model", "03_train_rmaat"} <= names


def test_notebooks_start_with_a_quick_switch():
    import jupytext

    for path in NOTEBOOKS:
        nb = jupytext.read(path)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code, f"{path.name} has no code cell"
        first = code[0]
        assert "QUICK" in first.source and "RMAAT_QUICK" in first.source, \
            f"{path.name}: the first code cell must be the parameters cell with the QUICK switch"
        assert "parameters" in first.metadata.get("tags", []), f"{path.name}: tag the first cell 'parameters'"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_in_quick_mode(path, tmp_path, monkeypatch):
    import jupytext
    from nbclient import NotebookClient

    monkeypatch.setenv("RMAAT_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    nb = jupytext.read(path)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    for needle in EXPECTED_OUTPUT.get(path.stem, []):
        assert needle in text, f"{path.name} did not print {needle!r}"
