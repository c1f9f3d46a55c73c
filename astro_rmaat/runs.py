"""Run directories: atomic writes, self-describing metadata, refuse-or-resume.

A run directory holds the outputs of one stage plus ``config.json`` (written first) and
``meta.json`` (written last). ``meta.json`` therefore marks a *finished* run: a finished
run is never overwritten. A directory that holds only ``config.json`` is an interrupted
run; it may be resumed only with the very same config.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from astro_rmaat.errors import RunExistsError

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


def make_meta(*, stage: str, seed: int | None, wall_time_s: float,
              packages: Iterable[str] = (), **extra: Any) -> dict[str, Any]:
    """The ``meta.json`` content: versions, git revision, seed, wall time, host."""
    meta = {
        "stage": stage,
        "seed": seed,
        "wall_time_s": round(float(wall_time_s), 6),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "versions": package_versions([*BASE_PACKAGES, *packages]),
    }
    meta.update(extra)
    return meta


# --------------------------------------------------------------------------- run directories
def is_finished(out_dir: str | os.PathLike) -> bool:
    return (Path(out_dir) / META_FILE).is_file()


def prepare_run_dir(out_dir: str | os.PathLike, config: dict[str, Any], *,
                    resume: bool = True) -> Path:
    """Create ``out_dir`` for a new run of ``config``, or reopen an interrupted one.

    Refuses (``RunExistsError``) when the directory holds a finished run, or an
    interrupted run of a different config, or (with ``resume=False``) any run at all.
    Writes ``config.json`` atomically and returns the directory.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"output path {str(out)!r} exists and is not a directory")
    if is_finished(out):
        raise RunExistsError(
            f"{str(out)!r} already holds a finished run ({META_FILE} present); "
            "choose a new --out directory or delete that one yourself")
    cfg_path = out / CONFIG_FILE
    if cfg_path.is_file():
        try:
            old = json.loads(cfg_path.read_text())
        except json.JSONDecodeError:
            old = None
        same = old == json.loads(to_json(config))
        if not same:
            raise RunExistsError(
                f"{str(out)!r} holds an interrupted run with a different config; "
                "use a new --out directory, or rerun with the config in "
                f"{str(cfg_path)!r} to resume it")
        if not resume:
            raise RunExistsError(f"{str(out)!r} already holds a run; resuming is disabled")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg_path, config)
    return out


def finish_run(out_dir: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``meta.json`` last: from now on the run is finished and protected."""
    return atomic_write_json(Path(out_dir) / META_FILE, meta)


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.elapsed`` (wall-clock seconds)."""

    def __enter__(self) -> "Stopwatch":
        self._t0 = time.perf_counter()
        self.elapsed = math.nan
        return self

    def __exit__(self, *exc: Any) -> None:
        self.elapsed = time.perf_counter() - self._t0
