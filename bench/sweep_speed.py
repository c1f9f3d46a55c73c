"""Sweep speed of the tripartite synapse: standalone + run_args, serial vs Dask, and Cython.

A sweep of about ``--points`` points (a grid over params.alpha x params.O_beta; 40 asks for
a 7 x 6 grid, 42 points) of 100 s simulated time each (Poisson rate steps, 1 unit,
dt = 1 ms), all phases side by side in this one process:

1. the cpp_standalone build, once, into a fresh cache (reported separately), then the
   binary alone: one stream of runs, and two concurrent streams (what two cores give now);
2. the standalone sweep run serially, in this process (its imports done beforehand, as the
   Dask workers' are);
3. the same sweep on a loopback Dask LocalCluster of ``--workers`` processes, several points
   per task (the default), then one point per task (the former dispatch);
4. the Cython runtime target on ``--cython-points`` of the same points, after one warm-up
   run (which may compile).

Two throughput ratios are printed: *cluster start excluded* (the sweep's wall time from
its start to its last point, minus the part of the cluster start the parent waited for;
the figure to compare with serial point work) and *cluster start included* (the whole
``sweep()`` call: cluster start, sweep, cluster stop). A per-point breakdown (means over the
points, in the process that ran each one) says where a point's time goes.

``PYTHONPATH=$PWD python bench/sweep_speed.py [--points 100] [--workers 2] [--cython-points 5]``
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from astro_rmaat.cli_args import ArgumentParser, positive_int, run_main


def base_config(cache: str) -> dict:
    return {"model": "tripartite", "n_units": 1, "dt_ms": 1.0, "record_dt_ms": 100.0,
            "standalone_dir": cache,
            "protocol": {"kind": "poisson_steps", "rates_hz": [5.0, 20.0] * 5, "step_s": 10.0}}


def grid(points: int) -> dict:
    side = int(np.ceil(np.sqrt(points)))
    alphas = np.round(np.linspace(0.0, 1.0, side), 4).tolist()
    betas = np.round(np.linspace(0.5, 5.0, int(np.ceil(points / side))), 4).tolist()
    return {"params.alpha": alphas, "params.O_beta": betas}


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg()) + " (1/5/15 min)"


def machine() -> list[str]:
    """Cores, threads per point and load: what the ratios depend on."""
    from brian2 import prefs
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    omp = prefs.devices.cpp_standalone.openmp_threads
    env = ", ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                     "OPENBLAS_NUM_THREADS") if k in os.environ)
    return [f"machine   : {cores} cores ({usable} usable by this process), load average "
            f"{load_average()} at start",
            f"threads   : one per point (Brian2 cpp_standalone openmp_threads = {omp}: a "
            f"single-threaded binary); torch not used; {env or 'no OMP/MKL/BLAS thread variables set'}"]


def binary_ceiling(project, cfg, stim, runs: int = 10) -> tuple[float, float]:
    """Seconds per binary run alone, and the throughput of two concurrent streams of runs
    relative to one: the most any two-worker sweep can gain on this machine right now."""
    from concurrent.futures import ThreadPoolExecutor

    def stream(k: int) -> None:
        for _ in range(k):
            project.run(cfg, stim)

    stream(1)
    t0 = time.perf_counter()
    stream(runs)
    one = time.perf_counter() - t0
    with ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        list(pool.map(stream, (runs, runs)))
        two = time.perf_counter() - t0
    return one / runs, 2 * one / two


class Phase:
    """One sweep: its whole-call wall, its meta.json and its points' timings."""

    def __init__(self, out: Path, call_s: float):
        self.out = out
        self.call_s = call_s
        self.meta = json.loads((out / "meta.json").read_text())
        points = [json.loads(p.read_text()) for p in sorted((out / "points").glob("*/meta.json"))]
        self.n = len(points)
        self.binary_s = sum(p["binary_wall_s"] for p in points) / self.n
        self.run_walls = [p["wall_time_s"] for p in points]   # each point's simulate() wall
        self.run_s = sum(self.run_walls) / self.n
        self.point_s = self.meta["point_wall_s_total"] / self.n
        self.wait_s = self.meta.get("dask_start_wait_s", 0.0)
        self.start_s = self.meta.get("dask_start_s", 0.0)
        self.slots = self.meta["workers"]

    @property
    def wall_s(self) -> float:
        """Sweep wall with the cluster start (the part not overlapped) excluded."""
        return self.meta["wall_time_s"] - self.wait_s

    @property
    def dispatch_s(self) -> float:
        """Per point: slot time not spent inside a point (parent work, dispatch, idle slots)."""
        return self.slots * self.wall_s / self.n - self.point_s


def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=positive_int, default=100)
    ap.add_argument("--workers", type=positive_int, default=2)
    ap.add_argument("--cython-points", type=positive_int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the temporary sweep directories")
    args = ap.parse_args(argv)

    from astro_rmaat.config import from_dict
    from astro_sim.sweep import SweepConfig, design, sweep
    from astro_sim.sweep_worker import warm_worker
    from astro_sim.tripartite import standalone as sa
    from astro_sim.tripartite.model import TripartiteSimConfig
    from astro_sim.tripartite.protocols import make_stimulus
    from astro_sim.tripartite.run import run

    for line in machine():
        print(line, flush=True)
    work = Path(tempfile.mkdtemp(prefix="sweep_speed-"))
    cache = str(work / "cache")
    cfg = SweepConfig(base=base_config(cache), grid=grid(args.points), seed=1, standalone=True)
    table, configs = design(cfg)
    n = len(table)
    print(f"sweep     : {n} points x 100 s simulated (1 unit, dt 1 ms, Poisson steps); "
          f"workers = {args.workers}", flush=True)

    # 1. build once
    pcfg = from_dict(TripartiteSimConfig, configs[0])
    stim = make_stimulus(pcfg.protocol, 1, 1e-3, pcfg.seed, pcfg.max_spikes)
    t0 = time.perf_counter()
    project = sa.get_project(pcfg, stim)
    build_s = time.perf_counter() - t0
    alone_s, ceiling = binary_ceiling(project, pcfg, stim)

    def timed_sweep(name: str, **kwargs) -> Phase:
        t0 = time.perf_counter()
        out = sweep(cfg, work / name, progress=False, **kwargs)
        return Phase(out, time.perf_counter() - t0)

    # 2. serial, in this process, after the imports a Dask worker does before its first task
    warm_worker(nonce="bench", standalone=True, model="tripartite")
    serial = timed_sweep("serial", executor="serial")
    # 3. Dask LocalCluster (loopback worker processes): several points per task, then one
    chunked = timed_sweep("dask", executor="dask", workers=args.workers)
    one = timed_sweep("dask1", executor="dask", workers=args.workers, points_per_task=1)
    load_after_sweeps = load_average()

    # 4. Cython runtime on a few of the same points (one warm-up run first)
    cy = []
    picks = np.linspace(0, n - 1, args.cython_points + 1).astype(int) if args.cython_points else []
    for k, i in enumerate(picks):
        c = from_dict(TripartiteSimConfig, {**configs[i], "target": "cython"})
        t0 = time.perf_counter()
        run(c)
        if k:
            cy.append(time.perf_counter() - t0)

    w = args.workers
    cols = [("serial", serial), (f"dask x{w} chunked", chunked), (f"dask x{w} 1/task", one)]
    head = f"{'':52s}" + "".join(f"{name:>18s}" for name, _ in cols)

    def row(label: str, fmt, values) -> str:
        return f"{label:52s}" + "".join(f"{fmt(v):>18s}" for v in values)

    print(f"\nstandalone build (once): {build_s:.2f} s (= {build_s / n:.3f} s/point over {n} points)")
    print(f"binary alone: {alone_s:.3f} s per run (binary + run_args + reading); two concurrent "
          f"streams of runs: {ceiling:.2f}x the throughput of one (this machine's ceiling now)")
    print(head)
    print(row("sweep wall, cluster start excluded (s)", "{:.2f}".format, [p.wall_s for _, p in cols]))
    print(row("  per point (s)", "{:.3f}".format, [p.wall_s / n for _, p in cols]))
    print(row("  throughput vs serial, cluster start excluded", "{:.2f}x".format,
              [serial.wall_s / p.wall_s for _, p in cols]))
    print(row("whole sweep() call, cluster start+stop incl. (s)", "{:.2f}".format,
              [p.call_s for _, p in cols]))
    print(row("  throughput vs serial, cluster start included", "{:.2f}x".format,
              [serial.call_s / p.call_s for _, p in cols]))
    print(row("cluster start: connect + warm workers (s)", "{:.2f}".format, [p.start_s for _, p in cols]))
    print(row("  of which waited for (not overlapped) (s)", "{:.2f}".format, [p.wait_s for _, p in cols]))
    print(row("outside the sweep wall: design, cluster stop (s)", "{:.2f}".format,
              [p.call_s - p.meta["wall_time_s"] for _, p in cols]))
    print("per point, mean over the points (ms), in the process that ran it:")
    print(row("  binary (launch to exit)", "{:.1f}".format, [1e3 * p.binary_s for _, p in cols]))
    print(row("  run overhead (stimulus, run_args, read, assemble)", "{:.1f}".format,
              [1e3 * (p.run_s - p.binary_s) for _, p in cols]))
    print(row("  files (lock, config, parquet, meta)", "{:.1f}".format,
              [1e3 * (p.point_s - p.run_s) for _, p in cols]))
    print(row("  point total", "{:.1f}".format, [1e3 * p.point_s for _, p in cols]))
    print(row("  + parent, dispatch, idle (slots x wall / n - total)", "{:.1f}".format,
              [1e3 * p.dispatch_s for _, p in cols]))
    print(row("  = slot time per point (slots x wall / n)", "{:.1f}".format,
              [1e3 * p.slots * p.wall_s / n for _, p in cols]))
    if cy:
        med_cy = statistics.median(cy)
        med_s = statistics.median(serial.run_walls)
        print(f"cython runtime median s/point: {med_cy:.3f} s (n = {len(cy)}, after one warm-up "
              f"run); cython / standalone run (median): {med_cy / med_s:.1f}x")
    print(f"load average after the sweeps: {load_after_sweeps}; at the end: {load_average()}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")
    return 0


if __name__ == "__main__":
    run_main(main)
