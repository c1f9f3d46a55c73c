"""Build the tripartite network once with Brian2 ``cpp_standalone``; rerun it with run_args.

A build is fixed by its *signature* — what changes the generated code or array shapes:
dt, record dt, number of units, run length, recorded variables, the presynaptic calcium
delay, and the model's source (:data:`SOURCE_FILES`). Everything else — every parameter (declared
``(shared, constant)``), the initial efficacy and the stimulus arrays (TimedArrays) — is
passed to the compiled binary on its command line, in the ``name=value`` /
``name=file`` form that ``device.run(run_args=...)`` produces. Builds are cached by
signature (``standalone_dir`` of the config, else ``$RMAAT_STANDALONE_CACHE``, else
``~/.cache/astro_rmaat/tripartite``), guarded by a file lock, so concurrent processes build
a signature once.

The build runs in a child Python process (``set_device('cpp_standalone',
build_on_run=False)``, ``device.build(run=False)``), so the caller's Brian2 device state is
never touched and a process can mix runtime and standalone runs. The child ends, with its
compiler, when the process that started it is gone (``astro_rmaat.workers.exit_with_parent``):
a killed sweep leaves no build running on into a directory the next invocation rebuilds.
Running needs neither Brian2 nor a compiler: :meth:`StandaloneProject.run` starts the binary
with a private results directory and reads the monitor files listed in the build's
``manifest.json``.
Parallel workers each run from their own copy of the binary and its static arrays
(:meth:`StandaloneProject.copy_to`).

A sweep (:mod:`astro_sim.sweep`) reaches this module through the family's hooks
(:mod:`astro_sim.tripartite.run`): :func:`standalone_build` before the points run,
:func:`standalone_point` around each point.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from astro_rmaat import runs
from astro_rmaat.config import from_dict, to_dict
from astro_rmaat.errors import ConfigError
from astro_rmaat.workers import die_with_parent
from astro_sim.param_table import si_factor
from astro_sim.tripartite.model import (POSTSYN_PARAMS, SYN_PARAMS, UNIT_PARAMS,
                                        TripartiteSimConfig, brian_name, build_network,
                                        initial_state, rho_init_values, stim_constants)
from astro_sim.tripartite.params import PARAM_UNITS, STATE_RANGES
from astro_sim.tripartite.protocols import make_stimulus

MANIFEST = "manifest.json"
#: the sources (under astro_sim/) whose text fixes the generated code: part of the signature
SOURCE_FILES = ("param_table.py", "tripartite/param_sets.py", "tripartite/params.py",
                "tripartite/model.py", "tripartite/standalone.py")

#: number of builds this process started (tests use it to prove "built exactly once")
BUILD_COUNT = 0


def _source_hash() -> str:
    h = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for name in SOURCE_FILES:
        h.update((package / name).read_bytes())
    return h.hexdigest()[:16]


@functools.cache
def _brian2_version() -> str:
    """The installed Brian2 (a metadata read, ~1 ms: once per process, not once per run)."""
    import importlib.metadata
    return importlib.metadata.version("brian2")


def signature(cfg, stim) -> dict[str, Any]:
    """What fixes the generated code: two configs with equal signatures share one build."""
    return {
        "dt_ms": cfg.dt_ms, "record_dt_ms": cfg.record_dt_ms, "n_units": cfg.n_units,
        "duration_s": round(stim.duration_s, 12), "record": list(cfg.record),
        "D_pre_ms": cfg.params.D_pre, "pre_shape": list(stim.pre.shape),
        "source": _source_hash(),
        "brian2": _brian2_version(),
    }


def signature_key(sig: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:20]


WORKER_CACHE_ENV = "RMAAT_STANDALONE_WORKER_CACHE"  # set by sweep workers: their private copies


def cache_root(cfg) -> Path:
    worker = os.environ.get(WORKER_CACHE_ENV)
    if worker:
        return Path(worker)
    if cfg.standalone_dir:
        return Path(cfg.standalone_dir)
    env = os.environ.get("RMAAT_STANDALONE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "astro_rmaat" / "tripartite"


class StandaloneProject:
    """A compiled build (``directory`` with ``main``, ``static_arrays/``, ``manifest.json``)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).resolve()
        self.manifest = json.loads((self.directory / MANIFEST).read_text())

    @property
    def signature(self) -> dict[str, Any]:
        return self.manifest["signature"]

    # ------------------------------------------------------------------ copies for workers
    def copy_to(self, dest: str | os.PathLike) -> "StandaloneProject":
        """A private copy (binary, static arrays, manifest) for one worker; reused if present."""
        dest = Path(dest)
        if not (dest / MANIFEST).is_file():
            tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=dest.parent if dest.parent.exists()
                                        else _mkdir(dest.parent)))
            shutil.copy2(self.directory / "main", tmp / "main")
            shutil.copytree(self.directory / "static_arrays", tmp / "static_arrays")
            shutil.copy2(self.directory / MANIFEST, tmp / MANIFEST)
            try:
                os.replace(tmp, dest)
            except OSError:  # another process placed it first
                shutil.rmtree(tmp, ignore_errors=True)
        return StandaloneProject(dest)

    # ------------------------------------------------------------------ one run
    def run_args(self, cfg, stim, run_dir: Path) -> list[str]:
        """The binary's ``name=value`` arguments for ``cfg`` (arrays written into ``run_dir``)."""
        names = self.manifest["params"]
        unit = self.manifest["unit_group"]
        args = []
        for pname, group in names.items():
            si = getattr(cfg.params, pname) * si_factor(PARAM_UNITS[pname])
            args.append(f"{group}.{brian_name(pname)}={float(si)!r}")
        for name, si in stim_constants(stim).items():
            args.append(f"{unit}.{name}={float(si)!r}")
        groups = {"unit": unit, "syn": self.manifest.get("syn_group", "syn")}
        values = {(unit, "rho"): rho_init_values(cfg)}
        for name, vals in initial_state(cfg, stim).items():
            group, trace_unit, _ = STATE_RANGES[name]
            values[(groups[group], name)] = vals * si_factor(trace_unit)
        for (group, name), vals in values.items():
            vals = np.ascontiguousarray(vals, dtype=np.float64)
            if np.all(vals == vals[0]):
                args.append(f"{group}.{name}={float(vals[0])!r}")
            else:
                path = run_dir / f"init_{group}_{name}.dat"
                vals.tofile(path)
                args.append(f"{group}.{name}={path}")
        for key, arr in (("pre_spike", stim.pre), ("post_spike", stim.post)):
            path = run_dir / f"{key}.dat"
            np.ascontiguousarray(arr, dtype=np.float64).tofile(path)
            args.append(f"{key}.values={path}")
        return args

    def run(self, cfg, stim, keep: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
        """Run the binary for ``cfg``; returns ``(t_s, {var: (n_t, n_units) SI}, binary_wall_s)``
        (the last: seconds from starting the binary to its exit)."""
        sig = signature(cfg, stim)
        if sig != self.signature:
            diff = sorted(k for k in sig if sig[k] != self.signature.get(k))
            raise ConfigError(f"this cpp_standalone build does not fit the config: {diff} differ "
                              "(they change the generated code); build for this signature")
        runs_dir = _mkdir(self.directory / "runs")
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=runs_dir))
        try:
            args = self.run_args(cfg, stim, run_dir)
            t0 = time.perf_counter()
            # the binary ends with the thread that runs it, also when a Dask worker is ended
            # under it (astro_rmaat.workers.die_with_parent)
            proc = subprocess.run(["./main", "--results_dir", f"{run_dir}/", *args],
                                  cwd=self.directory, capture_output=True, text=True,
                                  preexec_fn=die_with_parent())
            binary_wall_s = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"cpp_standalone binary in {self.directory} failed "
                                   f"({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
            return (*self._read(run_dir), binary_wall_s)
        finally:
            if not keep:
                shutil.rmtree(run_dir, ignore_errors=True)

    def _read(self, run_dir: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        n = self.signature["n_units"]
        t_s = np.fromfile(run_dir / self.manifest["t_file"], dtype=np.float64)
        arrays = {}
        for var, (fname, dtype) in self.manifest["outputs"].items():
            data = np.fromfile(run_dir / fname, dtype=np.dtype(dtype))
            arrays[var] = data.reshape(-1, n)[: t_s.size]
        return t_s, arrays


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def get_project(cfg, stim) -> StandaloneProject:
    """The cached build for ``cfg``'s signature, building it (once) if needed."""
    from filelock import FileLock

    sig = signature(cfg, stim)
    root = _mkdir(cache_root(cfg))
    directory = root / signature_key(sig)
    if not (directory / MANIFEST).is_file():  # the manifest is written last: present = built
        with FileLock(str(directory) + ".lock"):
            if not (directory / MANIFEST).is_file():
                build(cfg, directory)
    project = StandaloneProject(directory)
    if project.signature != sig:  # pragma: no cover - a hash collision or a stale cache
        raise ConfigError(f"standalone cache {directory} holds another build; delete it")
    return project


def build(cfg, directory: Path) -> None:
    """Generate and compile the project in a child process (the caller's device untouched)."""
    global BUILD_COUNT
    if directory.exists():
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    cfg_json = runs.to_json(to_dict(cfg))
    pkg_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-m", "astro_sim.tripartite.standalone", str(directory), str(os.getpid())],
                          input=cfg_json, env=env, capture_output=True, text=True)
    BUILD_COUNT += 1
    if proc.returncode != 0 or not (directory / MANIFEST).is_file():
        raise RuntimeError(f"cpp_standalone build in {directory} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _build_here(cfg_dict: dict[str, Any], directory: Path) -> None:
    """Child-process side of :func:`build`."""
    import brian2 as b2

    cfg = from_dict(TripartiteSimConfig, cfg_dict)
    stim = make_stimulus(cfg.protocol, cfg.n_units, cfg.dt_ms * 1e-3, cfg.seed, cfg.max_spikes)
    b2.set_device("cpp_standalone", build_on_run=False, directory=str(directory))
    h = build_network(cfg, stim)
    h.net.run(h.duration, namespace={})
    b2.device.build(directory=str(directory), compile=True, run=False, with_output=False)
    dev = b2.get_device()
    outputs = {}
    t_file = None
    for mon in (h.unit_mon, h.syn_mon):
        if mon is None:
            continue
        t_file = t_file or dev.get_array_filename(mon.variables["t"])
        for var in mon.record_variables:
            v = mon.variables[var]
            outputs[var] = (dev.get_array_filename(v), np.dtype(v.dtype).str)
    params = {**{p: h.unit.name for p in UNIT_PARAMS}, **{p: h.syn.name for p in SYN_PARAMS},
              **{p: h.postsyn.name for p in POSTSYN_PARAMS}}
    manifest = {"signature": signature(cfg, stim), "params": params, "unit_group": h.unit.name,
                "syn_group": h.syn.name,
                "t_file": t_file, "outputs": outputs}
    runs.atomic_write_json(directory / MANIFEST, manifest)


# ----------------------------------------------------------------------------- sweep hooks
def standalone_build(configs: Sequence[TripartiteSimConfig],
                     default_dir: Path) -> tuple[Path, list[str], int]:
    """Build each distinct signature among a sweep's point configs once, before any point runs.

    Builds go to the points' ``standalone_dir`` (a shared cache; the same for every point),
    else to ``default_dir``. Returns that directory, each point's build key (its build is
    the key's subdirectory) and the number of builds this call started.
    """
    before = BUILD_COUNT
    root: Path | None = None
    keys: list[str] = []
    seen: set[str] = set()
    for pcfg in configs:
        here = Path(pcfg.standalone_dir) if pcfg.standalone_dir else default_dir
        if root is not None and here != root:
            raise ConfigError("standalone_dir must not vary across a sweep's points")
        root = here
        stim = make_stimulus(pcfg.protocol, pcfg.n_units, pcfg.dt_ms * 1e-3, pcfg.seed,
                             pcfg.max_spikes)
        key = signature_key(signature(pcfg, stim))
        keys.append(key)
        if key not in seen:
            seen.add(key)
            get_project(dataclasses.replace(pcfg, standalone_dir=str(root)), stim)
    return root, keys, BUILD_COUNT - before


@contextlib.contextmanager
def standalone_point(build_dir: Path, key: str, worker_dir: Path) -> Iterator[None]:
    """Within it, this process runs standalone points from its own copy of the build ``key``
    of ``build_dir``, kept in ``worker_dir`` (copied by the process's first point)."""
    if not (worker_dir / key / MANIFEST).is_file():
        StandaloneProject(build_dir / key).copy_to(worker_dir / key)
    old_env = os.environ.get(WORKER_CACHE_ENV)
    os.environ[WORKER_CACHE_ENV] = str(worker_dir)
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop(WORKER_CACHE_ENV, None)
        else:
            os.environ[WORKER_CACHE_ENV] = old_env


if __name__ == "__main__":   # argv: the build directory, the pid of the process that asked for it
    from astro_rmaat.workers import adopt_orphans, exit_with_parent

    adopt_orphans()      # a compiler whose make was killed first stays in this tree, to be ended
    exit_with_parent(int(sys.argv[2]))
    _build_here(json.loads(sys.stdin.read()), Path(sys.argv[1]))
