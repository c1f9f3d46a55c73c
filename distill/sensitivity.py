"""How the fitted macro parameters and the retention schedule move across a sweep.

The RMAAT paper fixed its retention schedule from one simulation and left open what happens
when the simulation parameters change. ``sensitivity(cfg, sweep_dir, out_dir)`` answers it
for any sweep written by ``astro_sim.sweep``:

1. one macro model for all points (``cfg.model``, or the candidate with the smallest AICc
   summed over the points), fitted to every point on its own;
2. per point: the fitted parameters with standard errors, and schedule metrics with their
   standard deviation propagated from the fit's covariance (seeded sampling) —
   ``rf_first_T`` = RF(1, T) and ``rf_last_T`` = RF(T, T) for each horizon T,
   ``rf_inf_1`` = RF_inf(1), ``cycles_to_90`` = cycles until 90 % of the rise;
3. per swept key and output, the **elasticity** d ln(output) / d ln(key) from a least-squares
   regression of ln(output) on the ln of all swept keys jointly (a plain slope d output / d key
   where a key or output is not positive), with its standard error.

Written: ``sensitivity.csv`` (one row per point), ``elasticity.csv``, ``sensitivity.json``,
``sensitivity.png``, plus ``config.json`` / ``meta.json``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astro_rmaat import config as cfgmod
from astro_rmaat import runs
from astro_rmaat.errors import ConfigError, DataError
from distill import engine
from distill.fitting import FitConfig, choose_model
from distill.global_fit import load_sweep
from distill.models import get_model


@dataclass(frozen=True)
class SensitivityConfig:
    """Configuration of ``distill.sensitivity``."""

    fit: FitConfig = field(default_factory=FitConfig)  # how each point is fitted
    model: str | None = None              # macro model for all points; None: smallest summed criterion
    horizons: tuple[int, ...] = (8, 16, 64)  # segment counts T of the schedule metrics
    metric_samples: int = 500             # covariance draws for the metrics' standard deviations

    def __post_init__(self) -> None:
        if self.model is not None:
            get_model(self.model)
        if not self.horizons or any((not isinstance(T, int)) or T < 1 for T in self.horizons):
            raise ConfigError(f"horizons = {list(self.horizons)!r}: expected positive integers")
        cfgmod.require_positive("metric_samples", self.metric_samples)


# --------------------------------------------------------------------------- metrics
def schedule_metrics(name: str, params: dict[str, float], tau_cycle_s: float,
                     horizons: tuple[int, ...], K: int = 1024) -> dict[str, float]:
    """RF(1, T), RF(T, T) per horizon, RF_inf(1), and cycles to 90 % of the rise."""
    from astro_rmaat.retention import retention_factors
    from distill.retention import boundary_curve

    p = boundary_curve(name, params, tau_cycle_s, max(K, max(horizons)))
    dp = np.diff(p)
    out: dict[str, float] = {}
    for T in horizons:
        try:
            rf = retention_factors(dp[:T])
            out[f"rf_first_{T}"], out[f"rf_last_{T}"] = float(rf[0]), float(rf[-1])
        except DataError:       # no rise over the first T cycles
            out[f"rf_first_{T}"] = out[f"rf_last_{T}"] = math.nan
    span = params["p_inf"] - params["p0"]
    out["rf_inf_1"] = float(retention_factors(dp[:1], span=span)[0]) if span != 0 else math.nan
    frac = (p - p[0]) / span if span != 0 else np.zeros_like(p)
    hit = np.flatnonzero(frac >= 0.9)
    out["cycles_to_90"] = float(hit[0]) if hit.size else math.nan
    return out


def metrics_with_sd(fit: engine.CandidateFit, tau_cycle_s: float, horizons, n: int,
                    seed: int) -> tuple[dict[str, float], dict[str, float | None]]:
    """Metrics at the estimate, and their sd over draws from the covariance (None if no covariance)."""
    from distill.retention import sample_params

    best = schedule_metrics(fit.name, fit.values, tau_cycle_s, tuple(horizons))
    sd: dict[str, float | None] = {k: None for k in best}
    if fit.uncertainties_ok and fit.covar is not None:
        try:
            draws = [schedule_metrics(fit.name, v, tau_cycle_s, tuple(horizons))
                     for v in sample_params(fit, n, seed)]
        except DataError:
            draws = []
        if len(draws) >= 10:
            for k in best:
                vals = np.array([d[k] for d in draws])
                vals = vals[np.isfinite(vals)]
                sd[k] = float(np.std(vals, ddof=1)) if vals.size > 2 else None
    return best, sd


# --------------------------------------------------------------------------- elasticities
def elasticities(table, keys: list[str], outputs: list[str]) -> list[dict[str, Any]]:
    """Joint least-squares slopes of each output on the swept keys (log-log where possible)."""
    rows = []
    num_keys = [k for k in keys
                if np.issubdtype(np.asarray(table[k]).dtype, np.number) and table[k].nunique() > 1]
    if not num_keys:
        return rows
    X_raw = np.column_stack([table[k].to_numpy(dtype=float) for k in num_keys])
    log_key = [bool(np.all(X_raw[:, j] > 0)) for j in range(len(num_keys))]
    X = np.column_stack([np.log(X_raw[:, j]) if log_key[j] else X_raw[:, j]
                         for j in range(len(num_keys))])
    for out in outputs:
        y_raw = table[out].to_numpy(dtype=float)
        ok = np.isfinite(y_raw)
        if ok.sum() < len(num_keys) + 2:
            continue
        log_y = bool(np.all(y_raw[ok] > 0))
        y = np.log(y_raw[ok]) if log_y else y_raw[ok]
        A = np.column_stack([np.ones(ok.sum()), X[ok]])
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        resid = y - A @ coef
        dof = A.shape[0] - A.shape[1]
        s2 = float(resid @ resid / dof) if dof > 0 else math.nan
        try:
            cov = s2 * np.linalg.inv(A.T @ A)
            se = np.sqrt(np.maximum(np.diag(cov), 0.0))
        except np.linalg.LinAlgError:
            se = np.full(A.shape[1], math.nan)
        tss = float(np.sum((y - y.mean()) ** 2))
        r2 = 1.0 - float(resid @ resid) / tss if tss > 0 else math.nan
        for j, k in enumerate(num_keys):
            kind = ("elasticity d ln y / d ln x" if log_y and log_key[j] else
                    "d ln y / d x" if log_y else "d y / d ln x" if log_key[j] else "d y / d x")
            rows.append({"output": out, "key": k, "kind": kind, "slope": float(coef[j + 1]),
                         "stderr": float(se[j + 1]) if math.isfinite(se[j + 1]) else None,
                         "r2": r2, "n": int(ok.sum())})
    return rows


# --------------------------------------------------------------------------- the entry
def sensitivity(cfg: SensitivityConfig, sweep_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Fit every sweep point, tabulate parameters and schedule metrics, and their elasticities."""
    import pandas as pd

    if not isinstance(cfg, SensitivityConfig):
        raise ConfigError(f"sensitivity() needs a SensitivityConfig, got {type(cfg).__name__}")
    runs.check_out_dir(out_dir)           # finished, or not writable: before reading the sweep
    sweep = load_sweep(sweep_dir, **cfg.fit.curve_selection())
    if len(sweep.points) < 2:
        raise DataError(f"sweep {str(sweep.path)!r} has {len(sweep.points)} point(s); "
                        "sensitivity needs at least 2")
    out = runs.prepare_run_dir(out_dir, cfgmod.to_dict(cfg))
    with runs.Stopwatch() as sw:
        tau_cycle = sweep.tau_cycle_s
        totals = None
        name, chosen = cfg.model, None
        if name is None:   # its fits of the chosen model at every point are the ones used below
            name, totals, point_fits = choose_model(sweep, cfg.fit)
            chosen = point_fits[name]
        model = get_model(name)
        rows, fits = [], {}
        for i, pt in enumerate(sweep.points):
            f = chosen[i] if chosen is not None else engine.fit_model(
                name, pt.curve.t, pt.curve.y, n_starts=cfg.fit.n_starts, seed=cfg.fit.seed,
                offset=cfg.fit.offset, max_nfev=cfg.fit.max_nfev, with_report=False,
                where=f"sweep point {pt.point_id!r}")
            fits[pt.point_id] = f
            m, msd = metrics_with_sd(f, tau_cycle, cfg.horizons, cfg.metric_samples, cfg.fit.seed)
            row: dict[str, Any] = {"point_id": pt.point_id, **pt.grid}
            for p in model.param_names:
                row[p] = f.values[p]
                row[f"{p}_stderr"] = f.stderr.get(p)
            for k, v in m.items():
                row[k] = v
                row[f"{k}_sd"] = msd[k]
            row.update(r2=f.r2, aicc=f.aicc, uncertainties_ok=f.uncertainties_ok)
            rows.append(row)
        table = pd.DataFrame(rows)
        metric_names = list(schedule_metrics(name, fits[sweep.points[0].point_id].values,
                                             tau_cycle, cfg.horizons).keys())
        outputs = [p for p in model.param_names] + metric_names
        el = elasticities(table, sweep.keys, outputs)
        el_table = pd.DataFrame(el, columns=["output", "key", "kind", "slope", "stderr", "r2", "n"])
        runs.atomic_write_text(out / "sensitivity.csv", table.to_csv(index=False))
        runs.atomic_write_text(out / "elasticity.csv", el_table.to_csv(index=False))
        runs.atomic_write_json(out / "sensitivity.json", {
            "schema": "rmaat.sensitivity/v1", "sweep": str(sweep.path), "keys": sweep.keys,
            "model": name, "summed_criterion": totals, "tau_cycle_s": tau_cycle,
            "horizons": list(cfg.horizons),
            "points": _json_rows(table), "elasticities": _json_rows(el_table)})
        from distill import plots
        plots.save_sensitivity_figure(out / "sensitivity.png", sweep, fits, table, name, tau_cycle,
                                      cfg.horizons)
    runs.finish_run(out, runs.make_meta(stage="sensitivity", seed=cfg.fit.seed, wall_time_s=sw.elapsed,
                                        packages=("lmfit", "scipy"), sweep=str(sweep.path), model=name))
    return out


def _json_rows(df) -> list[dict[str, Any]]:
    out = []
    for rec in df.to_dict("records"):
        clean = {}
        for k, v in rec.items():
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            clean[k] = v
        out.append(clean)
    return out


def summary_text(out_dir: str | os.PathLike) -> str:
    """The elasticity table of a finished sensitivity run, as text."""
    import json

    doc = json.loads((Path(out_dir) / "sensitivity.json").read_text())
    lines = [f"model {doc['model']!r} fitted to {len(doc['points'])} sweep points; swept: "
             f"{', '.join(doc['keys'])}", f"{'output':<14} {'key':<28} {'slope':>9} {'± se':>8}  kind"]
    for r in doc["elasticities"]:
        se = r["stderr"]
        lines.append(f"{r['output']:<14} {r['key']:<28} {r['slope']:>9.3f} "
                     f"{(se if se is not None else math.nan):>8.3f}  {r['kind']}")
    return "\n".join(lines)
