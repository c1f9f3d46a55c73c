"""Packaging: the declared dependencies match the imports, and a wheel install (not the
source tree) finds its package data and runs.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("astro_rmaat", "rmaat_app", "astro_sim", "distill", "rmaat_model")

#: declared run-time dependencies that no module imports, and why they are needed anyway
USED_WITHOUT_IMPORT = {
    "cython": "Brian2's runtime code-generation target compiles through it",
    "jupytext": "the notebooks are jupytext .py files; it pairs them with .ipynb",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.split(r"[\s\[<>=!~;]", req.strip(), maxsplit=1)[0])


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    main = {_requirement_name(r) for r in project["dependencies"]}
    dev = {_requirement_name(r) for r in project["optional-dependencies"]["dev"]}
    return main, dev


def _imported_distributions(paths: list[Path]) -> dict[str, set[str]]:
    """distribution -> files importing it, for every third-party top-level import in ``paths``."""
    first_party = set(PACKAGES) | {p.stem for p in REPO.joinpath("tests").rglob("*.py")}
    dists = packages_distributions()
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in first_party or top == "__future__":
                    continue
                for dist in dists.get(top, [f"<no installed distribution provides {top!r}>"]):
                    found.setdefault(_norm(dist), set()).add(str(path.relative_to(REPO)))
    return found


def _py_files(*roots: str) -> list[Path]:
    return sorted(p for r in roots for p in (REPO / r).rglob("*.py"))


def test_every_import_of_the_packages_is_declared():
    main, _ = _declared()
    used = _imported_distributions(_py_files(*PACKAGES))
    # a distribution pulled in by another's extra counts as declared only if named itself
    undeclared = {d: sorted(f)[:3] for d, f in used.items() if d not in main and d != "torch"}
    assert not undeclared, f"imported but not in [project].dependencies: {undeclared}"
    assert "torch" in main


def test_every_declared_dependency_is_used():
    main, _ = _declared()
    used = set(_imported_distributions(_py_files(*PACKAGES)))
    # 'dask[distributed]': the extra brings distributed; both names are imports of the sweep
    unused = main - used - set(USED_WITHOUT_IMPORT)
    assert not unused, f"declared in [project].dependencies but imported nowhere: {sorted(unused)}"


def test_tests_and_notebooks_need_nothing_undeclared():
    main, dev = _declared()
    used = _imported_distributions(_py_files("tests", "notebooks", "scripts"))
    missing = {d: sorted(f)[:3] for d, f in used.items() if d not in main | dev}
    assert not missing, f"imported by tests/notebooks/scripts but declared nowhere: {missing}"


@pytest.mark.slow
def test_a_wheel_install_finds_its_data_and_runs(tmp_path):
    """Build the wheel, install it (no dependencies) into a fresh venv that borrows this
    interpreter's third-party packages, and run from outside the source tree."""
    src = tmp_path / "src"          # a copy, so the build writes nothing into the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(wheels), str(src)], check=True, timeout=300,
                   capture_output=True)
    (wheel,) = wheels.glob("astro_rmaat-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    borrowed = [p for p in sys.path if p.endswith("site-packages")]
    # a plain path entry: the borrowed directory's .pth files (this checkout's editable
    # install among them) are not processed, so only the wheel provides the project
    Path(site, "borrowed.pth").write_text("\n".join(borrowed) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--target", site, str(wheel)], check=True, timeout=300, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    rmaat = Path(site).parent.parent.parent / "bin" / "rmaat"
    cmd = [str(py), "-m", "rmaat_app", "train", "--help"] if not rmaat.is_file() else [str(rmaat), "train", "--help"]
    out = subprocess.run(cmd, cwd=outside, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "--task" in out.stdout, out.stderr
    probe = ("import astro_rmaat, json; from astro_rmaat.retention import default_retention_path, "
             "load_retention; p = default_retention_path(); r = load_retention(p); "
             "print(json.dumps([astro_rmaat.__file__, str(p), r.model_name, list(r.rf(4))]))")
    out = subprocess.run([str(py), "-c", probe], cwd=outside, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    import json
    module_file, data_file, model_name, rf4 = json.loads(out.stdout)
    assert module_file.startswith(site) and data_file.startswith(site)   # not the source tree
    assert model_name == "exp" and abs(sum(rf4) - 1) < 1e-9 and all(x > 0 for x in rf4)
