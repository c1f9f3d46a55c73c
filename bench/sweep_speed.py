"""Sweep speed of the tripartite synapse: standalone + run_args vs Cython, serial vs Dask.

A sweep of ``--points`` points (default 100; a 10 x 10 grid over params.alpha and
params.O_beta) of 100 s simulated time each (Poisson rate steps, 1 unit, dt = 1 ms):

1. cpp_standalone build time (once, into a fresh cache; reported separately);
2. the standalone sweep run serially: seconds per point (median of the points);
3. the same sweep on a loopback Dask LocalCluster of ``--workers`` processes (same build,
   each worker on its own copy): seconds per point and throughput ratio vs serial;
4. the Cython runtime target on ``--cython-points`` of the same points (after one warm-up
   run, which may compile): seconds per point (median).

All phases run side by side in this one process; the ratios are the figures to quote. Usage:
``PYTHONPATH=$PWD python bench/sweep_speed.py [--points 100] [--workers 2] [--cython-points 5]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def base_config(cache: str) -> dict:
    return {"model": "tripartite", "n_units": 1, "dt_ms": 1.0, "record_dt_ms": 100.0,
            "standalone_dir": cache,
            "protocol": {"kind": "poisson_steps", "rates_hz": [5.0, 20.0] * 5, "step_s": 10.0}}


def grid(points: int) -> dict:
    side = int(np.ceil(np.sqrt(points)))
    alphas = np.round(np.linspace(0.0, 1.0, side), 4).tolist()
    betas = np.round(np.linspace(0.5, 5.0, int(np.ceil(points / side))), 4).tolist()
    return {"params.alpha": alphas, "params.O_beta": betas}


def point_walls(out: Path) -> list[float]:
    walls = []
    for meta in sorted((out / "points").glob("*/meta.json")):
        walls.append(json.loads(meta.read_text())["wall_time_s"])
    return walls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cython-points", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the temporary sweep directories")
    args = ap.parse_args(argv)

    from astro_rmaat.config import from_dict
    from astro_sim import tripartite_standalone as sa
    from astro_sim.sweep import SweepConfig, design, sweep
    from astro_sim.tripartite import TripartiteSimConfig, make_stimulus, run

    work = Path(tempfile.mkdtemp(prefix="sweep_speed-"))
    cache = str(work / "cache")
    cfg = SweepConfig(base=base_config(cache), grid=grid(args.points), seed=1, standalone=True)
    table, configs = design(cfg)
    n = len(table)
    print(f"sweep: {n} points x 100 s simulated (1 unit, dt 1 ms, Poisson steps); "
          f"workers={args.workers}", flush=True)

    # 1. build once
    pcfg = from_dict(TripartiteSimConfig, configs[0])
    stim = make_stimulus(pcfg.protocol, 1, 1e-3, pcfg.seed, pcfg.max_spikes)
    t0 = time.perf_counter()
    sa.get_project(pcfg, stim)
    build_s = time.perf_counter() - t0

    # 2. standalone, serial
    out_serial = sweep(cfg, work / "serial", executor="serial", progress=False)
    meta_s = json.loads((out_serial / "meta.json").read_text())
    walls_s = point_walls(out_serial)

    # 3. standalone, Dask LocalCluster (loopback, worker processes): one point per task (the
    # former dispatch), then several points per task (the default)
    t0 = time.perf_counter()
    out_one = sweep(cfg, work / "dask1", executor="dask", workers=args.workers, progress=False,
                    points_per_task=1)
    one_total = time.perf_counter() - t0
    meta_1 = json.loads((out_one / "meta.json").read_text())
    t0 = time.perf_counter()
    out_dask = sweep(cfg, work / "dask", executor="dask", workers=args.workers, progress=False)
    dask_total = time.perf_counter() - t0
    meta_d = json.loads((out_dask / "meta.json").read_text())
    walls_d = point_walls(out_dask)

    # 4. Cython runtime on a few of the same points (one warm-up run first)
    cy = []
    picks = np.linspace(0, n - 1, args.cython_points + 1).astype(int)
    for k, i in enumerate(picks):
        c = from_dict(TripartiteSimConfig, {**configs[i], "target": "cython"})
        t0 = time.perf_counter()
        run(c)
        if k:
            cy.append(time.perf_counter() - t0)

    serial_pp = meta_s["wall_time_s"] / n
    dask_pp = meta_d["wall_time_s"] / n
    med_s = statistics.median(walls_s)
    med_d = statistics.median(walls_d)
    med_cy = statistics.median(cy)
    print(f"standalone build (once)                : {build_s:8.2f} s")
    print(f"standalone serial  median s/point      : {med_s:8.3f} s  (sweep wall {meta_s['wall_time_s']:.1f} s = {serial_pp:.3f} s/point incl. I/O)")
    print(f"standalone dask x{args.workers} median s/point      : {med_d:8.3f} s  (sweep wall {meta_d['wall_time_s']:.1f} s = {dask_pp:.3f} s/point; {dask_total:.1f} s incl. cluster start)")
    print(f"cython runtime     median s/point      : {med_cy:8.3f} s  (n = {len(cy)}, after one warm-up run)")
    print(f"ratio cython / standalone (median s/point)   : {med_cy / med_s:8.1f} x")
    print(f"standalone dask x{args.workers}, 1 point per task       : {meta_1['wall_time_s'] / n:8.3f} s/point ({one_total:.1f} s incl. cluster start)")
    print(f"ratio dask x{args.workers} / serial throughput           : {serial_pp / dask_pp:8.2f} x  (1 point per task: {serial_pp / (meta_1['wall_time_s'] / n):.2f} x)")
    print(f"ratio incl. cluster start (serial {meta_s['wall_time_s']:.1f} s)  : {meta_s['wall_time_s'] / dask_total:8.2f} x  (1 point per task: {meta_s['wall_time_s'] / one_total:.2f} x)")
    print(f"build amortised over {n} points              : {build_s / n:8.3f} s/point")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
