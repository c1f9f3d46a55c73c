"""What runs in a sweep's worker process (or in the sweep's own, for the serial executor).

:func:`run_point` runs one point of :mod:`astro_sim.sweep` into its run directory,
:func:`run_points` a chunk of them (one worker task), :func:`warm_worker` prepares a worker
before its first task. A task is a plain dict made by the sweep: ``point_id``, ``config``
(the point's full config table), ``point_dir``, ``nonce`` (names the run of the sweep), and
for standalone sweeps ``standalone_shared`` (the build directory), ``standalone_key`` and
``standalone_workers`` (where worker processes keep their copies of the build). The
family's hooks (:mod:`astro_sim.simulate`) do the family-specific part.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

from astro_rmaat import config as cfgmod
from astro_rmaat import runs

#: sweep nonce -> this process's runs.provenance for the points' meta.json (latest sweep only)
_CONTEXT: dict[str, dict[str, Any]] = {}


def _point_context(nonce: str) -> dict[str, Any]:
    """Git revision, versions and host for the points' meta.json: computed once per sweep in
    each process that runs points (two git subprocesses and a dozen metadata reads, tens of
    ms, that every point would otherwise repeat)."""
    from astro_sim import simulate

    if nonce not in _CONTEXT:
        _CONTEXT.clear()
        _CONTEXT[nonce] = runs.provenance(simulate.META_PACKAGES)
    return _CONTEXT[nonce]


def run_point(task: dict[str, Any]) -> dict[str, Any]:
    """Run one point into its run directory (any process; imports stay inside)."""
    from astro_sim import simulate

    point_dir = Path(task["point_dir"])
    if runs.is_finished(point_dir):
        return {"point_id": task["point_id"], "status": "skipped", "wall_s": 0.0}
    t0 = time.perf_counter()
    context = _point_context(task["nonce"])
    model = task["config"].get("model", "tripartite")
    pcfg = cfgmod.from_dict(simulate.config_class(model), task["config"])
    shared = task.get("standalone_shared")
    if shared:   # this worker process's own copy of the build, in a folder of its own
        worker_dir = Path(task["standalone_workers"]) / f"{socket.gethostname()}-{os.getpid()}"
        where = simulate.family_module(model).standalone_point(Path(shared), task["standalone_key"],
                                                               worker_dir)
    else:
        where = contextlib.nullcontext()
    with where:
        simulate.simulate(pcfg, point_dir, context=context)
    return {"point_id": task["point_id"], "status": "done", "wall_s": time.perf_counter() - t0}


def run_points(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run several points one after the other in one task (one dispatch, one result message)."""
    return [run_point(t) for t in tasks]


def warm_worker(nonce: str, standalone: bool, model: str) -> bool:
    """Prepare a worker process for the sweep ``nonce`` before its first task, so that its
    first point costs what the others do (without this it took ~0.3 s more).

    Imports what a point needs (Parquet writing, the file lock, the family's modules and
    its ``warm_imports``) and computes the points' meta.json context. Runs where
    ``client.run`` runs, the worker's main thread, which Brian2's import needs (it installs
    a SIGINT handler, and Dask runs tasks in other threads); standalone points never import
    Brian2 (the compiled binary runs alone).
    """
    import filelock  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from astro_sim import simulate
    family = simulate.family_module(model)
    if hasattr(family, "warm_imports"):
        family.warm_imports(standalone)
    if not standalone:
        import brian2  # noqa: F401
    _point_context(nonce)
    return True


def pool_worker(parent: int, nonce: str, standalone: bool, model: str) -> None:
    """Initializer of the ``processes`` executor's workers: each ends with the sweep's process
    (``astro_rmaat.workers.exit_with_parent``; a point cut short is run again on resume), then
    :func:`warm_worker`. (Dask's workers are its nanny's to end.)"""
    from astro_rmaat.workers import exit_with_parent
    exit_with_parent(parent)
    warm_worker(nonce, standalone, model)
