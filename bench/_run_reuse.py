"""Whether a benchmark may reuse a finished training run: only when this tree would train the
same thing (``bench/retention_curve.py``).

A finished run is reused by its folder, which names the setting and sizes but not the code.
Two things make it stale: its stored config differs from the one the benchmark builds now (a
model's definition or a default changed), or the code that trained it differs from this tree's
in the packages training reads (``CODE_DIRS``: what a retention mode means, a kernel, the data
generators). Code is compared by its form: a Python file's syntax tree without docstrings, so
an edit of a comment or a docstring changes nothing. The benchmark stamps each run it trains
with a fingerprint of those packages, ``<run folder>.code`` beside the folder, when it starts
the run (so an interrupted run is resumed only by the code that began it); a run trained before
stamps existed is judged by the git revision its ``meta.json`` records, each file git lists as
changed since then compared by form (files git does not track are not seen)."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("astro_rmaat", "rmaat_model")
STAMP_SUFFIX = ".code"


def _code_form(name: str, data: bytes) -> bytes:
    """A file as far as it changes what runs: a Python file's syntax tree without its docstrings
    (comments and layout never reach the tree), any other file as it is."""
    if not name.endswith(".py"):
        return data
    try:
        tree = ast.parse(data)
    except SyntaxError:
        return data
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


def _code_files(root: Path) -> list[Path]:
    return sorted(p for top in CODE_DIRS for p in (root / top).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def fingerprint(root: Path = ROOT) -> str:
    """sha256 over the files of ``CODE_DIRS`` under ``root``: their names and code forms, so an
    edit of a comment or docstring leaves it as it was."""
    h = hashlib.sha256()
    for path in _code_files(root):
        name = path.relative_to(root).as_posix()
        h.update(name.encode() + b"\0" + _code_form(name, path.read_bytes()) + b"\0")
    return h.hexdigest()


def _changed_since(rev: str, root: Path) -> list[str] | None:
    """The files of ``CODE_DIRS`` whose code form differs between revision ``rev`` and the
    files under ``root`` now; None when git cannot tell (no git, or a revision it lacks)."""
    def git(*args) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=60)
    try:
        names = git("diff", "--name-only", "--no-renames", rev, "--", *CODE_DIRS)
        if names.returncode != 0:
            return None
        changed = []
        for name in names.stdout.decode().split():
            old = git("show", f"{rev}:{name}")
            path = root / name
            if (old.returncode != 0 or not path.is_file()
                    or _code_form(name, old.stdout) != _code_form(name, path.read_bytes())):
                changed.append(name)
        return changed
    except (OSError, subprocess.SubprocessError):
        return None


def stamp_path(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + STAMP_SUFFIX)


def stamp(run_dir: str | Path, code: str) -> None:
    """Record that ``run_dir`` was trained by the code of fingerprint ``code``."""
    from astro_rmaat.runs import atomic_write_text
    atomic_write_text(stamp_path(run_dir), code + "\n")


def trained_on(run_dir: str | Path) -> str | None:
    """The git revision the run's meta.json records (``+dirty`` for a modified tree), or None."""
    return json.loads((Path(run_dir) / "meta.json").read_text()).get("git_revision")


def why_stale(run_dir: str | Path, config: dict, code: str, root: Path = ROOT) -> str | None:
    """None when the run in ``run_dir`` (finished, or interrupted and to be resumed) is what this
    tree would train from ``config`` (a TrainConfig as ``to_dict`` writes it); else why not, in a
    few words."""
    from astro_rmaat.errors import RmaatError
    from astro_rmaat.runs import config_difference, to_json
    from rmaat_model.train_config import stored_config

    run_dir = Path(run_dir)
    try:
        stored = json.loads(to_json(stored_config(json.loads((run_dir / "config.json").read_text()))))
    except (OSError, ValueError, RmaatError) as exc:
        return f"its stored config does not read ({exc})"
    given = json.loads(to_json(config))
    if stored != given:
        return f"its config differs ({config_difference(stored, given)})"
    mark = stamp_path(run_dir)
    if mark.is_file():
        return None if mark.read_text().strip() == code else f"it was trained by other code (in {', '.join(CODE_DIRS)})"
    if not (run_dir / "meta.json").is_file():   # interrupted before stamps existed: no record to judge by
        return None
    rev = trained_on(run_dir)
    if rev is None:
        return "it records no code revision"
    if rev.endswith("+dirty"):
        return f"it was trained in a modified tree at {rev[:7]}, whose code is not on record"
    changed = _changed_since(rev.split("+")[0], root)
    if changed is None:
        return f"it was trained on {rev[:7]}, which git cannot compare with this checkout"
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        return f"it was trained on {rev[:7]}, and {changed[0]}{more} changed since"
    return None


def set_aside(run_dir: str | Path) -> Path:
    """Rename a stale run (and its stamp) to the first free ``<name>.stale-<k>``; returns the new path."""
    run_dir = Path(run_dir)
    k = 1
    while run_dir.with_name(f"{run_dir.name}.stale-{k}").exists():
        k += 1
    new = run_dir.rename(run_dir.with_name(f"{run_dir.name}.stale-{k}"))
    mark = stamp_path(run_dir)
    if mark.is_file():
        mark.rename(stamp_path(new))
    return new
