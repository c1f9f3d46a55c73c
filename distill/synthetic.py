"""Synthetic traces with known parameters, in the exact layouts ``astro_sim`` writes.

For tests, the benchmark and the notebook: a samples file, a simulation-like run directory,
and a sweep directory (``design.parquet`` + ``points/<id>/samples.parquet``). Files are
labelled ``model = "synthetic:<family>"`` so they are never mistaken for a simulation.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from astro_rmaat import runs
from astro_rmaat.traces import write_traces
from distill.models import evaluate

#: Known parameters per family for the certified-answer tests and bench/fit_certification.py,
#: chosen so the families are distinguishable at 1 % noise (hill at n = 1 and power at
#: alpha = 1 are the same curve, so both stay away from it).
CERTIFIED_PARAMS: dict[str, dict[str, float]] = {
    "exp": dict(p0=0.02, p_inf=0.5, tau=8.0),
    "hill": dict(p0=0.0, p_inf=0.6, t_half=10.0, n=2.0),
    "double_exp": dict(p0=0.0, p_inf=1.0, tau_fast=1.5, tau_slow=15.0, w=0.5),
    "power": dict(p0=0.0, p_inf=1.0, tau=10.0, alpha=3.0),
    "mm": dict(p0=0.0, p_inf=1.0, t_half=5.0),
}


def samples_frame(family: str, params: dict[str, float], *, tau_cycle_s: float = 1.0,
                  n_cycles: int = 40, n_elements: int = 3, noise: float = 0.0, seed: int = 0,
                  variable: str = "p_l", unit: str = "1") -> pd.DataFrame:
    """Long-format samples: ``n_elements`` noisy copies of the curve at boundaries 0..n_cycles."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_cycles + 1) * float(tau_cycle_s)
    y = evaluate(family, t, params)
    rows = []
    for el in range(n_elements):
        v = y + rng.normal(0.0, noise, t.size) if noise > 0 else y
        rows.append(pd.DataFrame({"t_s": t, "variable": variable, "element": el, "value": v, "unit": unit}))
    return pd.concat(rows, ignore_index=True)


def write_samples(path: str | os.PathLike, family: str, params: dict[str, float], *,
                  tau_cycle_s: float = 1.0, config: dict[str, Any] | None = None, **kw) -> Path:
    """Write a ``samples.parquet`` whose attrs look like the simulator's."""
    df = samples_frame(family, params, tau_cycle_s=tau_cycle_s, **kw)
    variable = kw.get("variable", "p_l")
    attrs = {"model": f"synthetic:{family}", "tau_cycle_s": float(tau_cycle_s),
             "slow_variable": variable, "sampling": "cycle_boundaries",
             "config": config or {"family": family, "params": params, **{k: v for k, v in kw.items()}}}
    write_traces(df, path, attrs)
    return Path(path)


def write_run(run_dir: str | os.PathLike, family: str, params: dict[str, float], **kw) -> Path:
    """A finished simulation-like run directory: samples.parquet, config.json, meta.json."""
    out = runs.prepare_run_dir(run_dir, {"family": family, "params": params,
                                         **{k: v for k, v in kw.items() if k != "config"}})
    write_samples(out / "samples.parquet", family, params, **kw)
    runs.finish_run(out, runs.make_meta(stage="synthetic", seed=kw.get("seed"), wall_time_s=0.0))
    return out


def write_sweep(sweep_dir: str | os.PathLike, grid: dict[str, list[Any]],
                point: Callable[[dict[str, Any]], tuple[str, dict[str, float]]], *,
                seed: int = 0, **kw) -> Path:
    """A sweep directory over the Cartesian ``grid``; ``point(values) -> (family, params)``."""
    d = Path(sweep_dir)
    keys = list(grid)
    rows = []
    for i, combo in enumerate(itertools.product(*(grid[k] for k in keys))):
        values = dict(zip(keys, combo))
        pid = f"p{i:04d}"
        family, params = point(values)
        pseed = seed + i
        pdir = d / "points" / pid
        config = {"synthetic": family, "params": params, "grid": values, "seed": pseed}
        pdir.mkdir(parents=True, exist_ok=True)
        write_samples(pdir / "samples.parquet", family, params, seed=pseed, config=config, **kw)
        runs.atomic_write_json(pdir / "config.json", config)
        runs.atomic_write_json(pdir / "meta.json", {"stage": "synthetic", "seed": pseed})
        rows.append({"point_id": pid, **values, "seed": pseed})
    design = pd.DataFrame(rows)
    with runs.atomic_path(d / "design.parquet") as tmp:
        design.to_parquet(tmp, index=False)
    runs.atomic_write_text(d / "config.json", json.dumps({"grid": grid, "seed": seed}, indent=2))
    return d
