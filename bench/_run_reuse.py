"""Whether a benchmark may reuse a training run it finds in its folder: only when this tree would
train the same thing (``bench/retention_curve.py``).

A run is found by its folder, which names the setting and sizes but not the code. Three things
make it stale: its stored config differs from the one the benchmark builds now (a model's
definition or a default changed), the code that trained it differs from this tree's in the
project's packages training reads (``CODE_DIRS``: what a retention mode means, a kernel, the
data generators), or it was trained under other versions of the installed packages it computes
with (``PACKAGES``: the same seed gives other numbers under another torch). Code is compared
file by file in its code form: a Python file's syntax tree without docstrings, so an edit of a
comment or a docstring changes nothing (hidden files, and files git ignores, are not code). Of
the Python files, only those a run on its task can execute count (``read_by``: the modules
that train and evaluate it, its task's data module, and what they import, every import
statement counted); a change in another module (the command line, a process pool's watch)
leaves the stored runs current. Every other file of ``CODE_DIRS`` (data a run reads) counts. The
benchmark stamps each run it starts with the digest of every file, ``<run folder>.code`` beside
the folder, with the Python version (whose syntax trees it compares) and the packages' versions.
A finished run trained before stamps existed is judged by the git revision and the versions its
``meta.json`` records (the tree it finished in), each file changed since then compared by code
form, and stamped once it is found current. A run stamped before stamps named the versions is
judged on them by its meta.json when it finished, and by its code alone when it was
interrupted. An interrupted run without a stamp (started before them) is judged by its config
only.
"""

from __future__ import annotations

import ast
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("astro_rmaat", "rmaat_model")
PACKAGES = ("torch", "numpy")   # installed packages whose version changes a run's numbers
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


def _git(root: Path, *args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None


def _is_code_name(name: str) -> bool:
    """No hidden file or folder on the path, no compiled cache."""
    return not name.endswith(".pyc") and not any(p.startswith(".") or p == "__pycache__" for p in name.split("/"))


def _code_files(root: Path) -> list[str]:
    """The files of ``CODE_DIRS`` under ``root`` that are code: tracked or untracked, not ignored
    by git (every file outside a git checkout), none hidden and no compiled cache."""
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *CODE_DIRS)
    if listed is not None and listed.returncode == 0:
        names = [n for n in listed.stdout.decode().split("\0") if n]
    else:
        names = [p.relative_to(root).as_posix() for top in CODE_DIRS for p in (root / top).rglob("*")]
    return sorted(n for n in names if (root / n).is_file() and _is_code_name(n))


#: the modules that train a benchmark run and evaluate it (``_retention_runs.run_one``), whose
#: import closure, with the task's data module (``rmaat_model.data.base.TASKS``, imported by
#: name), is the Python code a run can execute
RUN_MODULES = ("rmaat_model.train", "rmaat_model.evaluate", "rmaat_model.checkpoint",
               "rmaat_model.train_config", "astro_rmaat.runs")


def _module_name(name: str) -> str:
    parts = name[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(module: str, name: str, source: bytes, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` (file ``name``) imports, anywhere in it, with
    the packages whose ``__init__`` each import runs."""
    package = module if name.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            parts = t.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & known
    return found


def read_by(task: str | None, root: Path = ROOT) -> frozenset[str] | None:
    """The Python files of ``CODE_DIRS`` under ``root`` that a run on ``task`` can execute: the
    import closure of ``RUN_MODULES`` and the task's data module (every data module for a task
    ``TASKS`` does not name). None, every file counting, for a tree without those modules or with
    a file there that does not parse. ``TASKS`` is this interpreter's (``ROOT``'s), the only
    import by name on the way.

    Taken from the tree as it is now: a module a run read before and reads no more was imported by
    a file that changed since, which the comparison sees; a file removed since counts whatever it
    was (``_first_change``)."""
    files = {_module_name(n): n for n in _code_files(root) if n.endswith(".py")}
    if not any(m in files for m in RUN_MODULES):
        return None
    from rmaat_model.data.base import TASKS
    todo = [m for m in (*RUN_MODULES, *([TASKS[task]] if task in TASKS else TASKS.values())) if m in files]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            parts = module.split(".")                      # importing a.b.c runs a and a.b first
            todo += [p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in files]
            try:
                todo += _imported(module, files[module], (root / files[module]).read_bytes(), set(files)) - seen
            except SyntaxError:     # not code this interpreter runs as it is: compare every file
                return None
    return frozenset(files[m] for m in seen)


def _counts(name: str, reads: frozenset[str] | None, *, removed: bool = False) -> bool:
    """Whether a change of file ``name`` can change a run that executes ``reads`` (``read_by``);
    a file removed since counts whatever it held (the run may have read it)."""
    return removed or reads is None or not name.endswith(".py") or name in reads


def fingerprint(root: Path = ROOT) -> dict:
    """{"python": "3.11", "packages": {"torch": ..., "numpy": ...}, "files": {name: sha256 of its
    code form}} for the code under ``root`` and the installed packages training computes with."""
    from astro_rmaat.runs import package_versions
    return {"python": ".".join(platform.python_version_tuple()[:2]),
            "packages": package_versions(PACKAGES),
            "files": {n: hashlib.sha256(_code_form(n, (root / n).read_bytes())).hexdigest()
                      for n in _code_files(root)}}


def _package_change(recorded: dict, code: dict) -> str | None:
    """The first of ``PACKAGES`` whose version in ``recorded`` (a stamp's ``packages`` or a
    meta.json's ``versions``) is not the one ``code`` (a ``fingerprint``) was taken under; a
    package the record does not name is not compared. None when none differs."""
    for name in PACKAGES:
        if name in recorded and recorded[name] != code["packages"].get(name):
            return (f"it was trained under {name} {recorded[name]}, this is {name} {code['packages'].get(name)} "
                    f"(the same seed gives other numbers across versions)")
    return None


def stamp_path(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + STAMP_SUFFIX)


def stamp(run_dir: str | Path, code: dict) -> None:
    """Record that ``run_dir`` is trained by the code of ``code`` (a ``fingerprint``)."""
    from astro_rmaat.runs import atomic_write_json
    atomic_write_json(stamp_path(run_dir), code)


def read_stamp(run_dir: str | Path) -> dict | None:
    """The run's stamp; None when it has none; ValueError when the file holds no stamp."""
    path = stamp_path(run_dir)
    if not path.is_file():
        return None
    try:
        mark = json.loads(path.read_text())
    except (OSError, ValueError):
        mark = None
    if not (isinstance(mark, dict) and isinstance(mark.get("python"), str) and isinstance(mark.get("files"), dict)
            and isinstance(mark.get("packages", {}), dict)):
        raise ValueError(f"its stamp {str(path)!r} does not read; expected the JSON that "
                         "bench/_run_reuse.py's fingerprint() writes")
    return mark


def trained_on(run_dir: str | Path) -> str | None:
    """The git revision the run's meta.json records (``+dirty`` for a modified tree): the tree it
    finished in, meta.json being written last. None when it records none."""
    return json.loads((Path(run_dir) / "meta.json").read_text()).get("git_revision")


def _first_and_more(names) -> str:
    """'a' or 'a and 3 more': the first of ``names`` (sorted) and how many follow."""
    return names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def _first_change(old: dict, new: dict, reads: frozenset[str] | None = None) -> str | None:
    """The first file (in name order) added, removed or changed between two ``files`` tables,
    and how many more, of those that count for a run that executes ``reads`` (``read_by``; None:
    every file; a file removed counts whatever it held); None when they are the same."""
    changed = sorted(n for n in set(old) | set(new)
                     if old.get(n) != new.get(n) and _counts(n, reads, removed=n not in new))
    return _first_and_more(changed) if changed else None


def _changed_since(rev: str, root: Path) -> tuple[str, ...] | None:
    """The code files (``_code_files``) whose code form differs between revision ``rev`` and the
    files under ``root`` now; None when git cannot tell (no git, or a revision it lacks)."""
    names = _git(root, "diff", "-z", "--name-only", "--no-renames", "--relative", rev, "--", *CODE_DIRS)
    if names is None or names.returncode != 0:
        return None
    current = set(_code_files(root))
    # git diff lists tracked files only; the code now also counts untracked ones git does not ignore
    candidates = {n for n in names.stdout.decode().split("\0") if n and _is_code_name(n)}
    untracked = _git(root, "ls-files", "-z", "--others", "--exclude-standard", "--", *CODE_DIRS)
    if untracked is None or untracked.returncode != 0:
        return None
    candidates |= {n for n in untracked.stdout.decode().split("\0") if n} & current
    changed = []
    for name in sorted(candidates):
        old = _git(root, "show", f"{rev}:./{name}")
        if old is None:
            return None
        if name not in current:                       # removed since
            if old.returncode == 0:
                changed.append(name)
        elif old.returncode != 0 or _code_form(name, old.stdout) != _code_form(name, (root / name).read_bytes()):
            changed.append(name)
    return tuple(changed)


def config_mismatch(run_dir: str | Path, config: dict) -> str | None:
    """None when the run in ``run_dir`` stored ``config`` (a TrainConfig as ``to_dict`` writes it,
    an older run's config read as today's code reads it); else how they differ."""
    from astro_rmaat.errors import RmaatError
    from astro_rmaat.runs import config_difference, to_json
    from rmaat_model.train_config import stored_config

    try:
        stored = json.loads(to_json(stored_config(json.loads((Path(run_dir) / "config.json").read_text()))))
    except (OSError, ValueError, RmaatError) as exc:
        return f"its stored config does not read: {exc}"
    given = json.loads(to_json(config))
    return None if stored == given else f"its config differs, {config_difference(stored, given)}"


def why_stale(run_dir: str | Path, config: dict, code: dict, root: Path = ROOT,
              changes: dict | None = None) -> str | None:
    """None when the run in ``run_dir`` (finished, or interrupted and to be resumed) is what this
    tree would train from ``config`` (``config_mismatch``) with the code and package versions of
    ``code`` (a ``fingerprint``, ``code_mismatch``); else why not, in a few words."""
    return config_mismatch(run_dir, config) or code_mismatch(run_dir, code, root, changes,
                                                             read_by(config.get("task"), root))


def _read_meta(run_dir: Path) -> dict:
    """A finished run's meta.json, its ``versions`` checked to be a table; ValueError (one line)
    when it does not read."""
    try:
        meta = json.loads((run_dir / "meta.json").read_text())
        versions = meta.get("versions", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"its meta.json does not read: {exc}") from None
    if not isinstance(versions, dict):
        raise ValueError(f"its meta.json does not read: 'versions' is {versions!r}, expected a table of "
                         "package versions")
    return meta


def code_mismatch(run_dir: str | Path, code: dict, root: Path = ROOT, changes: dict | None = None,
                  reads: frozenset[str] | None = None) -> str | None:
    """None when the run in ``run_dir`` was trained by the code and under the package versions of
    ``code`` (a ``fingerprint``), as far as a run that executes ``reads`` (``read_by``; None:
    every file) reads it; else why not. A stamped run is judged by its stamp, the
    versions of one stamped before stamps named them by its meta.json (an interrupted one, which
    has none, by its code alone); an unstamped finished run by the versions and revision its
    meta.json records, through git; an unstamped interrupted run passes (its config decides).
    ``changes``: a dict that keeps what git found per revision across calls (one benchmark's runs
    share a few revisions)."""
    run_dir = Path(run_dir)
    try:
        mark = read_stamp(run_dir)
    except ValueError as exc:
        return str(exc)
    finished = (run_dir / "meta.json").is_file()
    if mark is not None:
        if mark.get("python") != code["python"]:
            return (f"it was stamped under Python {mark.get('python')}, this is {code['python']} "
                    f"(code is compared by syntax tree within one version)")
        change = _first_change(mark.get("files", {}), code["files"], reads)
        if change is not None:
            return f"it was trained by other code: {change} differ(s)"
        if "packages" in mark:
            return _package_change(mark["packages"], code)
        if not finished:   # interrupted, stamped before stamps named versions: its code decides
            return None
    elif not finished:     # interrupted before stamps existed: its config decides
        return None
    try:
        meta = _read_meta(run_dir)
    except ValueError as exc:
        return str(exc)
    package = _package_change(meta.get("versions", {}), code)
    if package is not None or mark is not None:
        return package
    rev = meta.get("git_revision")
    if rev is None:
        return "it records no code revision"
    if rev.endswith("+dirty"):
        return f"it was trained in a modified tree at {rev[:7]}, whose code is not on record"
    changes = {} if changes is None else changes
    if rev not in changes:
        changes[rev] = _changed_since(rev, root)
    if changes[rev] is None:
        return f"it was trained on {rev[:7]}, which git cannot compare with this checkout"
    changed = [n for n in changes[rev] if _counts(n, reads, removed=not (root / n).is_file())]
    if changed:
        return f"it was trained on {rev[:7]}, and {_first_and_more(changed)} changed since"
    return None


def set_aside(run_dir: str | Path) -> Path:
    """Rename a stale run (and its stamp) to the first ``<name>.stale-<k>`` free for both; returns
    the new path."""
    run_dir = Path(run_dir)
    k = 1
    while (run_dir.with_name(f"{run_dir.name}.stale-{k}").exists()
           or stamp_path(run_dir.with_name(f"{run_dir.name}.stale-{k}")).exists()):
        k += 1
    new = run_dir.rename(run_dir.with_name(f"{run_dir.name}.stale-{k}"))
    if stamp_path(run_dir).is_file():
        stamp_path(run_dir).rename(stamp_path(new))
    return new


def stale_runs(runs: list[tuple[str, dict]], code: dict,
               root: Path = ROOT) -> tuple[list[tuple[str, str, bool]], list[str]]:
    """Of ``runs`` ((folder, the TrainConfig it should hold, as ``to_dict`` writes it)), those
    already started (config.json is written first): (folder, why, resumable) of each that this
    tree would not train as it is (another config, or other code or package versions than
    ``code``, a ``fingerprint``), resumable False for an interrupted run whose config differs (``train``
    refuses it); and the finished current runs without a stamp (judged by git)."""
    from astro_rmaat.runs import CONFIG_FILE, is_finished

    stale, unstamped, changes, reads = [], [], {}, {}
    for run, config in runs:
        if (Path(run) / CONFIG_FILE).is_file():
            differs = config_mismatch(run, config)
            task = config.get("task")
            if task not in reads:
                reads[task] = read_by(task, root)
            why = differs or code_mismatch(run, code, root, changes, reads[task])
            finished = is_finished(run)
            if why is not None:
                stale.append((run, why, finished or differs is None))
            elif finished and not stamp_path(run).is_file():   # current, so a stamp there reads
                unstamped.append(run)
    return stale, unstamped


def settle(runs: list[tuple[str, dict]], code: dict, policy: str, out: Path, root: Path = ROOT) -> int | None:
    """Apply ``policy`` (``--stale``: stop, retrain or reuse) to the stale runs among ``runs``
    (``stale_runs``), before anything is trained; 2 after one line on stderr when the benchmark
    must stop, else None (the stale runs set aside or kept, the current unstamped ones stamped)."""
    stale, unstamped = stale_runs(runs, code, root)
    if stale:
        where, why, _ = stale[0]
        n = len(stale)
        what = (f"{n} run{'s' if n > 1 else ''} under {out} that this tree would not train as "
                f"{'they are' if n > 1 else 'it is'}: {where}: {why}" + (f" (and {n - 1} more)" if n > 1 else ""))
        blocked = [(w, y) for w, y, resumable in stale if not resumable]
        if policy == "stop":
            print(f"error: {what}; expected --stale retrain to rename and train again, or --stale reuse "
                  f"to report finished runs as trained and resume interrupted ones with this code", file=sys.stderr)
            return 2
        if policy == "reuse" and blocked:
            print(f"error: --stale reuse: the interrupted run {blocked[0][0]} cannot be resumed, {blocked[0][1]}; "
                  f"expected --stale retrain", file=sys.stderr)
            return 2
        if policy == "retrain":
            for where, _, _ in stale:
                set_aside(where)
            print(f"set aside {what}; renamed <name>.stale-<k>, trained again below", flush=True)
        else:
            print(f"reusing {what}; finished ones as trained (results.csv's trained_on gives each run's "
                  f"revision), interrupted ones resumed with this code", flush=True)
    for where in unstamped:   # judged current by their recorded revision: stamped, so git is not needed again
        stamp(where, code)
    return None
