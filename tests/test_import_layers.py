"""The import graph: layers point one way and no module imports itself in a circle.

Layers, bottom to top: ``astro_rmaat`` (the shared base: errors, config, run directories,
style, the two file formats) <- the stages ``astro_sim``, ``distill``, ``rmaat_model``
(which meet only at files, never at imports) <- ``rmaat_app`` (the ``rmaat`` command, the
pipeline and its report). Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE = "astro_rmaat"
STAGES = ("astro_sim", "distill", "rmaat_model")
APP = "rmaat_app"
PACKAGES = (BASE, *STAGES, APP)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """First-party modules ``name`` imports (``from pkg import mod`` resolves to ``pkg.mod``)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def layer(mod: str) -> str:
    return mod.split(".")[0]


def test_the_graph_sees_every_package(graph):
    assert {layer(m) for m in graph} == set(PACKAGES)
    assert "astro_rmaat.errors" in graph["astro_rmaat.config"]      # the parser resolves imports


def test_no_arrow_points_up_or_across_stages(graph):
    bad = []
    for mod, deps in graph.items():
        for dep in deps:
            a, b = layer(mod), layer(dep)
            if a == b or b == BASE or a == APP:
                continue
            bad.append(f"{mod} -> {dep}")
    assert not bad, "imports against the layering (base <- stages <- app):\n" + "\n".join(sorted(bad))


def test_no_import_circles(graph):
    """Tarjan's strongly connected components: every one must be a single module. A module
    importing its own package (whose ``__init__`` may re-export it) is left out."""
    edges = {m: {d for d in deps if d != m.rpartition(".")[0]} for m, deps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_no_private_name_crosses_a_module(graph):
    """``from a import _b`` or ``a._b`` from another module: a private name used as an API."""
    mods = modules()
    bad = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__") and node.module in mods:
                        bad.append(f"{name}: from {node.module} import {a.name}")
                    if f"{node.module}.{a.name}" in mods:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods:
                        aliases[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                bad.append(f"{name}: {aliases[node.value.id]}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(sorted(set(bad)))
