"""Run directories: atomic writes, self-describing metadata, refuse-or-resume.

A run directory holds the outputs of one stage plus ``config.json`` (written first) and
``meta.json`` (written last). ``meta.json`` therefore marks a *finished* run: a finished
run is never overwritten. A directory that holds only ``config.json`` is an interrupted
run; it may be resumed only with the very same config.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator

from astro_rmaat.errors import OutputError, RmaatError, RunBusyError, RunExistsError

CONFIG_FILE = "config.json"
_UMASK = os.umask(0o022)
os.umask(_UMASK)
META_FILE = "meta.json"


# --------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The rename is atomic on POSIX, so readers see either the old file or the whole new
    one, never a half-written file. On an exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    try:  # numpy scalars and arrays without importing numpy here
        return obj.tolist()
    except AttributeError:
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def to_json(obj: Any) -> str:
    """Stable, human-readable JSON (sorted keys, NaN refused)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, to_json(obj))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- metadata
def git_revision(start: str | os.PathLike | None = None) -> str | None:
    """The git commit of the source tree this code runs from (``+dirty`` if modified)."""
    start = Path(start) if start else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=start, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=start, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


BASE_PACKAGES = ("astro-rmaat", "numpy", "pandas", "pyarrow")


def provenance(packages: Iterable[str] = ()) -> dict[str, Any]:
    """What ``meta.json`` records about the code and the machine: git revision, Python,
    platform, host and the versions of :data:`BASE_PACKAGES` plus ``packages``.

    It costs two git subprocesses and one metadata read per package (tens of ms): a caller
    that finishes many runs (a sweep's points) computes it once and passes it to
    :func:`make_meta`.
    """
    return {
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "versions": package_versions([*BASE_PACKAGES, *packages]),
    }


def make_meta(*, stage: str, seed: int | None, wall_time_s: float,
              packages: Iterable[str] = (), context: dict[str, Any] | None = None,
              **extra: Any) -> dict[str, Any]:
    """The ``meta.json`` content: versions, git revision, seed, wall time, host.

    ``context``: ``provenance(packages)`` computed beforehand (else computed here).
    """
    meta = {
        "stage": stage,
        "seed": seed,
        "wall_time_s": round(float(wall_time_s), 6),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(context if context is not None else provenance(packages)),
    }
    meta.update(extra)
    return meta


# --------------------------------------------------------------------------- run directories
LOCK_FILE = ".lock"   # flock'd by the process that runs in the directory; holds its pid
#: run directory (resolved) -> its FileLock, for the directories this process holds
_HELD: dict[Path, Any] = {}
#: run directory (resolved) -> the topmost directory this process created for it
_CREATED: dict[Path, Path] = {}


def is_finished(out_dir: str | os.PathLike) -> bool:
    return (Path(out_dir) / META_FILE).is_file()


def describe_os_error(path: str | os.PathLike | None, exc: OSError, action: str = "write") -> str:
    """``cannot write 'runs/x': Permission denied (choose a writable location)`` — one line."""
    where = exc.filename if exc.filename is not None else path
    reason = exc.strerror or type(exc).__name__
    hint = {errno.ENOSPC: "free some space or choose another location",
            errno.EDQUOT: "free some space or choose another location",
            errno.EROFS: "choose a writable location",
            errno.EACCES: "choose a writable location",
            errno.EPERM: "choose a writable location",
            errno.ENOTDIR: "a part of the path is a file",
            errno.ENOENT: "a folder on the path is missing"}.get(exc.errno, "choose another location")
    if where is None:
        return f"cannot {action} an output file: {reason} ({hint})"
    return f"cannot {action} {str(where)!r}: {reason} ({hint})"


def _first_missing(path: Path) -> Path | None:
    """The topmost ancestor of ``path`` (itself included) that does not exist yet."""
    missing = None
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return missing
        missing = p
    return missing


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """Refuse, before any work, an ``--out`` that cannot become this run's directory.

    A finished run, a path that is a file, a location that cannot be written (permissions,
    read-only, immutable) or a path through a file: one :class:`RmaatError` each, and
    nothing is created (writability is probed with a temporary file that is removed).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"output path {str(out)!r} exists and is not a directory")
    if is_finished(out):
        raise RunExistsError(
            f"{str(out)!r} already holds a finished run ({META_FILE} present); "
            "choose a new --out directory or delete that one yourself")
    missing = _first_missing(out.absolute())
    anchor = missing.parent if missing is not None else out.absolute()
    if not anchor.is_dir():
        raise OutputError(f"cannot create {str(out)!r}: {str(anchor)!r} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".rmaat-probe-", dir=anchor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        exc.filename = None
        raise OutputError(describe_os_error(anchor, exc)) from None
    return out


def _lock_holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().split()
    except OSError:
        text = []
    return f"pid {text[0]} on {text[1]}" if len(text) >= 2 else "another process"


def lock_run_dir(out_dir: str | os.PathLike) -> None:
    """Take the directory's lock (``.lock``, a ``filelock.FileLock``) or refuse at once.

    The lock is an OS file lock (flock), so the kernel drops it when its process dies: a
    lock left by a killed run is simply taken over. The holder writes its pid and host into
    the file so that a refused process can name it. Re-taking a lock this process already
    holds is allowed (a resumed run in the same process).
    """
    import filelock

    out = Path(out_dir)
    key = out.resolve()
    if key in _HELD:
        _HELD[key].acquire()
        return
    lock_path = out / LOCK_FILE
    lock = filelock.FileLock(str(lock_path), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise RunBusyError(f"{str(out)!r} is in use by {_lock_holder(lock_path)}; wait for that "
                           "run to end, or choose another --out directory") from None
    with open(lock_path, "r+") as fh:   # our pid, for a refused process to name
        fh.truncate(0)
        fh.write(f"{os.getpid()} {socket.gethostname()}\n")
    _HELD[key] = lock


def release_run_dir(out_dir: str | os.PathLike, *, remove: bool = False) -> None:
    """Drop this process's lock on ``out_dir`` (``remove``: delete ``.lock`` too)."""
    out = Path(out_dir)
    lock = _HELD.pop(out.resolve(), None)
    if lock is None:
        return
    if remove:  # after meta.json: a process that takes a fresh lock sees a finished run
        with contextlib.suppress(OSError):
            (out / LOCK_FILE).unlink()
    lock.release(force=True)


def discard_new_unfinished() -> list[Path]:
    """Remove the run directories this process created and did not finish.

    Called when a run stops on a user error (a bad input found late, a full disk): the
    corrected command then starts from nothing instead of meeting a half-made directory.
    Returns the directories removed.
    """
    removed = []
    for run, top in list(_CREATED.items()):
        _CREATED.pop(run)
        release_run_dir(run)
        if run.is_dir() and not is_finished(run):
            shutil.rmtree(top, ignore_errors=True)
            removed.append(top)
    return removed


def prepare_run_dir(out_dir: str | os.PathLike, config: dict[str, Any], *,
                    resume: bool = True, stored: Callable[[dict], dict] | None = None,
                    free: Collection[str] = ()) -> Path:
    """Create ``out_dir`` for a new run of ``config``, or reopen an interrupted one.

    Refuses (``RunExistsError``) when the directory holds a finished run, or an
    interrupted run of a different config, or (with ``resume=False``) any run at all;
    ``RunBusyError`` when another live process runs in it; ``OutputError`` when it cannot
    be written. Takes the directory's lock (held until :func:`finish_run` or the end of the
    process), writes ``config.json`` atomically and returns the directory.

    ``stored`` reads an interrupted run's ``config.json`` as today's code would write it
    (fields added since then filled with the values the run was made with), so a run
    interrupted under an earlier version resumes under the same command; a stored config it
    cannot read (``RmaatError``) counts as different. ``free`` names top-level fields that a
    resumed run may change, because they change no number it writes (``config.json`` then
    records the new value).
    """
    out = check_out_dir(out_dir)
    missing = _first_missing(out.absolute())
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(describe_os_error(out, exc)) from None
    if missing is not None:
        _CREATED[out.resolve()] = missing
    lock_run_dir(out)
    try:
        _check_config(out, config, resume, stored, free)
        atomic_write_json(out / CONFIG_FILE, config)
    except RmaatError:
        release_run_dir(out)
        raise
    return out


def _check_config(out: Path, config: dict[str, Any], resume: bool,
                  stored: Callable[[dict], dict] | None, free: Collection[str] = ()) -> None:
    if is_finished(out):   # finished before we got the lock
        raise RunExistsError(f"{str(out)!r} already holds a finished run ({META_FILE} present); "
                             "choose a new --out directory or delete that one yourself")
    cfg_path = out / CONFIG_FILE
    if cfg_path.is_file():
        try:
            old = json.loads(cfg_path.read_text())
        except json.JSONDecodeError:
            old = None
        upgraded = read_stored(old, stored)
        if upgraded is not old:   # as today's code writes it (tuples as lists)
            old = json.loads(to_json(upgraded))
        difference = resume_difference(old, json.loads(to_json(config)), free)
        if difference is not None:
            raise RunExistsError(
                f"{str(out)!r} holds an interrupted run with a different config "
                f"({difference}); use a new --out directory, or rerun with "
                f"the stored value(s) to resume it")
        if not resume:
            raise RunExistsError(f"{str(out)!r} already holds a run; resuming is disabled")


def resume_difference(stored: Any, given: Any, free: Collection[str] = ()) -> str | None:
    """Where a stored config and the given one differ for a resume, as ``config_difference``
    says it, their top-level fields ``free`` left out; None where they agree."""
    def without(config: Any) -> Any:
        return {k: v for k, v in config.items() if k not in free} if isinstance(config, dict) else config

    stored, given = without(stored), without(given)
    return None if stored == given else config_difference(stored, given)


def read_stored(old: Any, stored: Callable[[dict], dict] | None) -> Any:
    """A stored config as ``stored`` reads it today; as it is (and so compared as it is) when
    there is no reader, it is not a table, or the reader refuses it (``RmaatError``)."""
    if stored is None or not isinstance(old, dict):
        return old
    try:
        return stored(old)
    except RmaatError:
        return old


def config_difference(stored: Any, given: Any, where: str = "") -> str:
    """The first place two configs differ, as 'key: stored X, given Y' (keys in sorted order)."""
    if isinstance(stored, dict) and isinstance(given, dict):
        for key in sorted(set(stored) | set(given)):
            path = f"{where}.{key}" if where else str(key)
            if key not in stored:
                return f"{path}: absent from the stored config, given {given[key]!r}"
            if key not in given:
                return f"{path}: stored {stored[key]!r}, absent from the given config"
            if stored[key] != given[key]:
                return config_difference(stored[key], given[key], path)
        return "no difference"
    return f"{where or 'config'}: stored {stored!r}, given {given!r}"


def finish_run(out_dir: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``meta.json`` last: from now on the run is finished and protected."""
    path = atomic_write_json(Path(out_dir) / META_FILE, meta)
    _CREATED.pop(Path(out_dir).resolve(), None)
    release_run_dir(out_dir, remove=True)
    return path


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.elapsed`` (wall-clock seconds)."""

    def __enter__(self) -> "Stopwatch":
        self._t0 = time.perf_counter()
        self.elapsed = math.nan
        return self

    def __exit__(self, *exc: Any) -> None:
        self.elapsed = time.perf_counter() - self._t0
