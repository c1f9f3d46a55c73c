"""docs/parameters.md is what scripts/make_param_tables.py renders from the parameter tables now."""

from __future__ import annotations

import importlib.util


def test_parameter_docs_match_the_tables(repo_root):
    spec = importlib.util.spec_from_file_location("make_param_tables",
                                                  repo_root / "scripts" / "make_param_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = repo_root / "docs" / "parameters.md"
    assert doc.is_file() and doc.read_text() == mod.render(), \
        f"docs/parameters.md is out of date with the parameter tables: {mod.COMMAND}"
