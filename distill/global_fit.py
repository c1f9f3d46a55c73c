"""Global fit across the points of a sweep: shared time constant(s), per-point amplitude.

A sweep directory (written by ``astro_sim.sweep``) is laid out as::

    sweep_dir/config.json                  the sweep (base config + grid)
    sweep_dir/design.parquet               one row per point: point_id ("p0000"), one column
                                           per grid key named by its dotted key, seed
    sweep_dir/points/<point_id>/samples.parquet   (+ traces.parquet, config.json, meta.json)

Each point's curve is ``p_i(t) = p0_i + (p_inf_i - p0_i) g(t; shape)``. The global fit
shares the shape parameters (by default all of them: ``tau`` for the exponential) across
points and gives each point its own ``p0_i`` and ``p_inf_i``; lmfit minimises the
concatenated residuals of all points. It is compared with fitting every point on its own
(same model) by AICc/BIC on the pooled data and by the extra-sum-of-squares F test of the
nested hypothesis "one shape for all points". Because the retention factor depends on the
shape only, a supported global fit means one retention schedule serves the whole sweep.
Its uncertainties pass the same check as a single fit's
(:func:`distill.engine.check_uncertainties`). The ``distill.fit`` stage runs all of this for
a sweep directory (:func:`distill.fitting.fit_sweep`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astro_rmaat import config as cfgmod
from astro_rmaat.errors import ConfigError, DataError
from distill import engine
from distill.curves import Curve, check_curve, load_curve
from distill.models import get_model


# --------------------------------------------------------------------------- reading a sweep
@dataclass
class SweepPoint:
    point_id: str
    grid: dict[str, Any]           # dotted key -> value of this point
    curve: Curve


@dataclass
class Sweep:
    path: Path
    keys: list[str]                # the swept (dotted) keys
    points: list[SweepPoint]
    config: dict[str, Any]

    @property
    def tau_cycle_s(self) -> float:
        taus = {round(p.curve.tau_cycle_s, 12) for p in self.points}
        if len(taus) != 1:
            raise DataError(f"sweep {str(self.path)!r}: points have different cycle lengths "
                            f"{sorted(taus)}; one retention schedule needs one tau_cycle_s")
        return self.points[0].curve.tau_cycle_s


def is_sweep_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "design.parquet").is_file()


def load_sweep(sweep_dir: str | os.PathLike, **selection: Any) -> Sweep:
    """Read the design and every point's samples; one clear error for a broken layout.

    ``selection`` picks each point's curve (the keywords of :func:`distill.curves.load_curve`).
    """
    import pandas as pd

    d = Path(sweep_dir)
    if not is_sweep_dir(d):
        raise DataError(f"{str(d)!r} is not a sweep directory (no design.parquet)")
    try:
        design = pd.read_parquet(d / "design.parquet")
    except Exception as exc:
        raise DataError(f"sweep design {str(d / 'design.parquet')!r} is unreadable: {exc}") from None
    if "point_id" not in design.columns or design.empty:
        raise DataError(f"sweep design {str(d / 'design.parquet')!r} needs rows with a 'point_id' column")
    keys = [c for c in design.columns if c not in ("point_id", "seed")]
    config = {}
    if (d / "config.json").is_file():
        config = cfgmod.read_json_file(d / "config.json", what="sweep config")
    points = []
    for row in design.to_dict("records"):
        pid = str(row["point_id"])
        pdir = d / "points" / pid
        if not pdir.is_dir():
            raise DataError(f"sweep {str(d)!r}: point {pid!r} has no directory {str(pdir)!r} "
                            "(the sweep did not finish?)")
        curve = load_curve(pdir, **selection)
        grid = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in row.items() if k in keys}
        points.append(SweepPoint(pid, grid, curve))
    return Sweep(path=d, keys=keys, points=points, config=config)


# --------------------------------------------------------------------------- the global fit
@dataclass
class GlobalFit:
    model: str
    shared: tuple[str, ...]                 # shape parameters common to all points
    point_ids: list[str]
    values: dict[str, float]                # lmfit names: shared as-is, per-point "name__pid"
    stderr: dict[str, float | None]
    varied: tuple[str, ...]
    covar: np.ndarray | None
    n: int
    rss: float
    aic: float
    bic: float
    aicc: float
    uncertainties_ok: bool
    uncertainty_problems: list[str]
    independent: list[engine.CandidateFit]   # the same model fitted point by point
    comparison: dict[str, Any] = field(default_factory=dict)
    report: str = field(default="", repr=False)

    def point_values(self, pid: str) -> dict[str, float]:
        """All model parameters of point ``pid`` (shared + its own)."""
        m = get_model(self.model)
        return {p: self.values[p] if p in self.shared else self.values[f"{p}__{pid}"]
                for p in m.param_names}

    def point_candidate(self, pid: str) -> engine.CandidateFit:
        """Point ``pid`` as a :class:`CandidateFit`, its covariance a block of the global one."""
        m = get_model(self.model)
        names = {p: (p if p in self.shared else f"{p}__{pid}") for p in m.param_names}
        varied = tuple(p for p in m.param_names if names[p] in self.varied)
        covar = None
        if self.covar is not None:
            idx = [self.varied.index(names[p]) for p in varied]
            covar = self.covar[np.ix_(idx, idx)]
        ind = self.independent[self.point_ids.index(pid)]
        return engine.CandidateFit(
            name=self.model, values=self.point_values(pid),
            stderr={p: self.stderr.get(names[p]) for p in m.param_names}, varied=varied,
            covar=covar, n=ind.n, rss=math.nan, r2=math.nan, aic=math.nan, bic=math.nan,
            aicc=math.nan, uncertainties_ok=self.uncertainties_ok,
            uncertainty_problems=list(self.uncertainty_problems), diagnostics={}, success=True,
            message="block of the global fit", nfev=0, bounds=ind.bounds)

    def to_json(self) -> dict[str, Any]:
        def num(x):
            return None if x is None or not math.isfinite(x) else float(x)
        return {
            "model": self.model, "shared": list(self.shared),
            "shared_params": {p: {"value": self.values[p], "stderr": num(self.stderr.get(p))}
                              for p in self.shared},
            "points": {pid: {p: {"value": v, "stderr": num(self.stderr.get(
                                 p if p in self.shared else f"{p}__{pid}"))}
                             for p, v in self.point_values(pid).items()}
                       for pid in self.point_ids},
            "param_names": list(self.varied),
            "covariance": None if self.covar is None else self.covar.tolist(),
            "n": self.n, "k": len(self.varied), "rss": self.rss, "aic": self.aic,
            "bic": self.bic, "aicc": num(self.aicc),
            "uncertainties_ok": self.uncertainties_ok,
            "uncertainty_problems": self.uncertainty_problems,
            "comparison_with_independent_fits": self.comparison,
        }


def global_fit(model: str, curves: list[tuple[np.ndarray, np.ndarray]], point_ids: list[str], *,
               shared: tuple[str, ...] | None = None, n_starts: int = 4, seed: int = 0,
               offset: str = "free", max_nfev: int = 20000, point_max_nfev: int = 4000,
               independent: list[engine.CandidateFit] | None = None) -> GlobalFit:
    """Fit ``model`` to all ``curves`` at once with the ``shared`` shape parameters common.

    The per-point fits of ``model`` (the starting values, and the comparison that says whether
    sharing is supported) are made here with ``point_max_nfev`` evaluations per start, unless
    ``independent`` gives them, one per curve in order (a caller that has already fitted
    every point, as ``distill.fitting.fit_sweep`` has); ``max_nfev`` caps each start of the
    global fit, whose parameters are the shared ones plus the rest once per point."""
    import lmfit
    from scipy import stats

    m = get_model(model)
    shared = tuple(m.shape_names) if shared is None else tuple(shared)
    unknown = [p for p in shared if p not in m.param_names]
    if unknown:
        raise ConfigError(f"shared = {list(shared)!r}: {unknown} are not parameters of {model!r} "
                          f"({', '.join(m.param_names)})")
    if len(curves) < 2:
        raise DataError(f"a global fit needs at least 2 sweep points, got {len(curves)}")
    if len(set(point_ids)) != len(point_ids):
        raise DataError(f"sweep point ids repeat: {point_ids}")
    curves = [check_curve(t, y, where=f"sweep point {pid!r}") for (t, y), pid in zip(curves, point_ids)]
    if independent is None:
        independent = [engine.fit_model(m, t, y, n_starts=n_starts, seed=seed, offset=offset,
                                        max_nfev=point_max_nfev, with_report=False, where=f"sweep point {pid!r}")
                       for (t, y), pid in zip(curves, point_ids)]
    elif len(independent) != len(curves) or any(f.name != model for f in independent):
        raise ConfigError(f"independent: expected one fit of {model!r} per curve ({len(curves)}); got "
                          f"{[f.name for f in independent]}")
    t_all = np.concatenate([t for t, _ in curves]); y_all = np.concatenate([y for _, y in curves])
    bounds = m.bounds(t_all, y_all)
    per_point = [p for p in m.param_names if p not in shared]

    def lname(p, pid):
        return p if p in shared else f"{p}__{pid}"

    # lmfit.minimize with this residual rather than an lmfit.Model: the fit concatenates
    # several curves, each on its own time grid, whose parameters are named per sweep point
    # at run time (p_inf__<point id>) and partly shared; a Model is one function of one grid
    # with the parameters of its signature, and composite Models combine curves on that grid.
    def residual(params):
        v = params.valuesdict()
        return np.concatenate([
            m.func(t, **{p: v[lname(p, pid)] for p in m.param_names}) - y
            for (t, y), pid in zip(curves, point_ids)])

    rng = np.random.default_rng([int(seed), 104729])
    best = None
    for start in range(n_starts):
        params = lmfit.Parameters()
        for p in shared:
            vals = np.array([f.values[p] for f in independent])
            v0 = float(np.median(vals)) * (1.0 if start == 0 else float(np.exp(rng.normal(0, 0.3))))
            lo, hi = bounds[p]
            params.add(p, value=float(np.clip(v0, lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))),
                       min=lo, max=hi)
        for f, pid in zip(independent, point_ids):
            b = f.bounds
            for p in per_point:
                lo, hi = b[p]
                params.add(lname(p, pid), value=float(np.clip(f.values[p], lo, hi)), min=lo, max=hi,
                           vary=p in f.varied)
        res = lmfit.minimize(residual, params, method=engine.METHOD, max_nfev=max_nfev)
        if np.isfinite(res.chisqr) and (best is None or res.chisqr < best.chisqr):
            best = res
    if best is None:
        raise DataError(f"global fit of {model!r} failed from every start (non-finite residuals)")
    varied = tuple(best.var_names)
    values = {n: float(best.params[n].value) for n in best.params}
    covar = None if best.covar is None else np.array(best.covar, dtype=np.float64)
    covar, checked, problems = engine.check_uncertainties(
        varied, values, covar, {n: (float(best.params[n].min), float(best.params[n].max)) for n in varied},
        errorbars=bool(best.errorbars), success=bool(best.success), message=str(best.message))
    stderr: dict[str, float | None] = {n: None for n in values}
    stderr.update(checked)
    N = int(y_all.size); k = len(varied)
    rss = float(best.chisqr)
    aic, bic, aicc = engine.information_criteria(max(rss, 1e-300), N, k)
    rss_ind = float(sum(f.rss for f in independent)); k_ind = int(sum(f.k for f in independent))
    aic_i, bic_i, aicc_i = engine.information_criteria(max(rss_ind, 1e-300), N, k_ind)
    comparison: dict[str, Any] = {
        "independent_rss": rss_ind, "independent_k": k_ind,
        "independent_aicc": aicc_i if math.isfinite(aicc_i) else None, "independent_bic": bic_i,
        "delta_aicc_global_minus_independent": (aicc - aicc_i) if math.isfinite(aicc - aicc_i) else None,
        "delta_bic_global_minus_independent": bic - bic_i,
    }
    dfn, dfd = k_ind - k, N - k_ind
    if dfn > 0 and dfd > 0 and rss_ind > 0:
        F = max((rss - rss_ind) / dfn, 0.0) / (rss_ind / dfd)
        comparison.update(f_stat=F, f_dfn=dfn, f_dfd=dfd, f_p=float(stats.f.sf(F, dfn, dfd)))
    comparison["shared_supported"] = bool(
        comparison["delta_aicc_global_minus_independent"] is not None
        and comparison["delta_aicc_global_minus_independent"] <= 0)
    return GlobalFit(model=model, shared=shared, point_ids=list(point_ids), values=values,
                     stderr=stderr, varied=varied, covar=covar, n=N, rss=rss, aic=aic, bic=bic,
                     aicc=aicc, uncertainties_ok=not problems, uncertainty_problems=problems,
                     independent=independent, comparison=comparison,
                     report=lmfit.fit_report(best, show_correl=False))


def summary(gf: GlobalFit) -> str:
    """Plain-text report of a global fit."""
    lines = [f"global fit of {gf.model!r}: shared {', '.join(gf.shared)} over {len(gf.point_ids)} points"]
    for p in gf.shared:
        s = gf.stderr.get(p)
        lines.append(f"  {p:<9} = {gf.values[p]:.6g} ± {s:.3g}" if s is not None
                     else f"  {p:<9} = {gf.values[p]:.6g} ± (not estimated)")
    c = gf.comparison
    lines.append(f"  vs independent fits: dAICc = {c.get('delta_aicc_global_minus_independent')}, "
                 f"F p-value = {c.get('f_p')}; shared shape "
                 f"{'supported' if c.get('shared_supported') else 'NOT supported'}")
    if not gf.uncertainties_ok:
        lines.append("  UNCERTAINTIES NOT ESTIMATED: " + "; ".join(gf.uncertainty_problems))
    return "\n".join(lines)


