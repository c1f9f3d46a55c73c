"""What the docs and docstrings point at exists: every file path they cite, and every dotted
name of the project's packages the README and docs pages quote in code spans."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("astro_rmaat", "astro_sim", "distill", "rmaat_model", "rmaat_app")
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
SOURCES = sorted(p for d in (*PACKAGES, "bench", "scripts", "notebooks", "tests")
                 for p in (REPO / d).rglob("*.py") if p != Path(__file__).resolve())
#: a repository path as prose cites it: a docs page, a bench or test script, ...
CITED_PATH = re.compile(r"(?<![\w/.$])((?:docs|bench|scripts|notebooks|tests|"
                        + "|".join(PACKAGES) + r")/[\w./-]*\w\.(?:md|py|json|sh|csv|png))")
DOTTED = re.compile(r"`((?:" + "|".join(PACKAGES) + r")(?:\.\w+)+)(?:[(:`])")


def _cited_paths(text: str) -> set[str]:
    return set(CITED_PATH.findall(text))


@pytest.mark.parametrize("path", [*PAGES, *SOURCES], ids=lambda p: str(p.relative_to(REPO)))
def test_cited_files_exist(path):
    text = path.read_text()
    missing = sorted(rel for rel in _cited_paths(text) if not (REPO / rel).exists())
    assert not missing, f"{path.relative_to(REPO)} cites files that do not exist: {missing}"
    for gone in ("DESIGN.md", "reference/astro_models.md", "reference/rmaat_and_lra.md",
                 "reference/memory_models.md"):
        assert gone not in text, f"{path.relative_to(REPO)} cites {gone}, which is not in the repository"


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_quoted_names_resolve(page):
    names = sorted(set(DOTTED.findall(page.read_text())))
    missing = [n for n in names if not _resolves(n)]
    assert not missing, f"{page.relative_to(REPO)} quotes names that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    """A Markdown link to a local file resolves from the page's own folder (anchors aside)."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    missing = sorted(t for t in local if not (page.parent / t).exists())
    assert not missing, f"{page.relative_to(REPO)} links files that do not exist: {missing}"
