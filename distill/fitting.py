"""The ``distill.fit`` stage: its configuration, and one run directory per fitted trace or sweep.

``fit(cfg, traces_path, out_dir)`` is the stage entry. For a traces/samples file or a
simulation run directory it fits every candidate macro model (:mod:`distill.engine`),
chooses one by AICc or BIC and writes ``fit.json``, ``retention.json`` and ``fit.png``; for
a sweep directory it chooses the model with the smallest criterion summed over the points
and fits it with a shape shared across them (:mod:`distill.global_fit`). ``config.json`` is
written first, ``meta.json`` last. ``comparison_table`` and ``describe`` are the plain-text
views of the candidates that ``fit.json`` and the notebook show.
"""

from __future__ import annotations

import math
import os
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from astro_rmaat import config as cfgmod
from astro_rmaat import resources, runs
from astro_rmaat.errors import ConfigError, DataError
from distill import engine
from distill.curves import Curve, load_curve
from distill.engine import CandidateFit
from distill.global_fit import Sweep, global_fit, is_sweep_dir, load_sweep, summary
from distill.models import DEFAULT_CANDIDATES, get_model


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class FitConfig:
    """Everything ``distill.fit`` needs besides the trace file."""

    variable: str | None = None          # trace variable to fit; None: the trace's slow_variable, else "p_l"
    element: int | None = None           # one element (synapse/unit); None: reduce over elements
    reduce: Literal["mean", "sum"] = "mean"  # how elements are combined when element is None
    models: tuple[str, ...] = DEFAULT_CANDIDATES  # candidate macro models (names in distill.models.MODELS)
    criterion: Literal["aicc", "bic"] = "aicc"    # model choice: smallest AICc (default) or BIC
    offset: Literal["free", "zero", "first"] = "free"  # p(0): fitted / fixed at 0 / fixed at the first sample
    n_starts: int = 8                    # at most this many seeded starts per model (best kept; stops when 2 agree)
    seed: int = 0                        # seed of the starting points and of the band sampling
    max_nfev: int = 4000                 # cap on model evaluations per start of a one-curve fit
    #                                      (a sweep's global fit has its own: 20 000)
    tau_cycle_s: float | None = None     # one STP cycle, s; None: from the trace attrs
    n_cycles: int = 1024                 # K: the schedule is tabulated at cycle boundaries 0..K (>= 1024)
    band_level: float = 0.95             # central probability of the uncertainty band
    band_samples: int = 2000             # parameter draws from the covariance for the band
    plot_T: tuple[int, ...] = (4, 8, 16, 32)  # segment counts T drawn in the schedule figure
    shared: tuple[str, ...] | None = None     # global fit only: parameters shared across sweep points; None: all shape parameters
    group_by: str | None = None          # global fit only: also fit a shared shape within each value of this swept key

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("models = (): expected at least one candidate macro model")
        for name in self.models:
            get_model(name)
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"models = {list(self.models)!r}: each candidate may appear once")
        cfgmod.require_seed("seed", self.seed)
        cfgmod.require_positive("n_starts", self.n_starts)
        cfgmod.require_positive("max_nfev", self.max_nfev)
        cfgmod.require_positive("band_samples", self.band_samples)
        if self.tau_cycle_s is not None:
            cfgmod.require_positive("tau_cycle_s", self.tau_cycle_s, "s")
        if not isinstance(self.n_cycles, int) or self.n_cycles < 1024:
            raise ConfigError(f"n_cycles = {self.n_cycles!r}: expected an integer >= 1024 "
                              "(the schedule is tabulated at cycle boundaries 0..K)")
        if not 0 < self.band_level < 1:
            raise ConfigError(f"band_level = {self.band_level!r}: expected a probability in (0, 1)")
        if any((not isinstance(T, int)) or T < 1 for T in self.plot_T):
            raise ConfigError(f"plot_T = {list(self.plot_T)!r}: expected positive integers")
        if self.element is not None and self.element < 0:
            raise ConfigError(f"element = {self.element!r}: expected an index >= 0")

    def curve_selection(self) -> dict[str, Any]:
        """The keywords of :func:`distill.curves.load_curve` that pick this config's curve."""
        return {"variable": self.variable, "element": self.element, "reduce": self.reduce,
                "tau_cycle_s": self.tau_cycle_s}


# --------------------------------------------------------------------------- the stage entry
def check_memory(cfg: FitConfig) -> None:
    """Refuse sizes whose arrays cannot fit in the machine's memory, before anything is read or
    written (lower bounds): the band evaluates ``band_samples`` curves at the boundaries
    0..n_cycles, and the figure's schedule for T has T factors (float64 each)."""
    for need, what, instead in (
            (8 * cfg.band_samples * (cfg.n_cycles + 1),
             f"band_samples = {cfg.band_samples}, n_cycles = {cfg.n_cycles}: the band's {cfg.band_samples:,} "
             f"curves of {cfg.n_cycles + 1:,} boundaries", "fewer band_samples or cycles"),
            (8 * max(cfg.plot_T, default=0), f"plot_T = {list(cfg.plot_T)}: {max(cfg.plot_T, default=0):,} "
             "retention factors", "fewer segments in plot_T")):
        resources.check_memory(need, what, instead)


def fit(cfg: FitConfig, traces_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Fit ``cfg.models`` to the trace and write ``fit.json``, ``retention.json``, ``fit.png``.

    ``traces_path`` may be a samples/traces Parquet file, a simulation run directory, or a
    sweep directory (``design.parquet`` + ``points/``), which runs the global fit instead.
    Returns the run directory.
    """
    if not isinstance(cfg, FitConfig):
        raise ConfigError(f"fit() needs a FitConfig, got {type(cfg).__name__}")
    runs.check_out_dir(out_dir)           # finished, or not writable: before reading anything
    if is_sweep_dir(traces_path):         # (a file's presence only)
        return fit_sweep(cfg, traces_path, out_dir)
    check_memory(cfg)                     # fit_sweep's own check serves the sweep above
    curve = load_curve(traces_path, **cfg.curve_selection())
    out = runs.prepare_run_dir(out_dir, cfgmod.to_dict(cfg))
    with runs.Stopwatch() as sw:
        fits = engine.fit_candidates(curve.t, curve.y, cfg.models, n_starts=cfg.n_starts, seed=cfg.seed,
                                     offset=cfg.offset, max_nfev=cfg.max_nfev,
                                     where=f"{str(curve.path)!r} variable {curve.variable!r}")
        chosen = engine.select(fits, cfg.criterion)
        write_outputs(out, cfg, curve, fits, chosen)
    runs.finish_run(out, runs.make_meta(
        stage="fit", seed=cfg.seed, wall_time_s=sw.elapsed, packages=("lmfit", "scipy", "matplotlib"),
        traces=str(curve.path), traces_sha256=curve.sha256, chosen_model=chosen.name,
        files={name: runs.sha256_file(out / name) for name in ("fit.json", "retention.json")}))
    return out


def source_block(curve: Curve) -> dict[str, Any]:
    """Where a curve came from, as written into ``fit.json`` and ``retention.json``."""
    return {"traces": str(curve.path), "sha256": curve.sha256, "variable": curve.variable,
            "unit": curve.unit, "model": curve.attrs.get("model"),
            "simulation_config": curve.attrs.get("config") or {}}


def write_outputs(out: Path, cfg: FitConfig, curve: Curve, fits: list[CandidateFit],
                  chosen: CandidateFit) -> dict[str, Any]:
    """fit.json, retention.json (validated before writing) and fit.png, all atomically."""
    from distill import plots
    from distill.retention import build_document

    fit_doc = {
        "schema": "rmaat.fit/v1",
        "chosen": chosen.name, "criterion": cfg.criterion,
        "data": {"t_s": curve.t.tolist(), "p": curve.y.tolist(), "variable": curve.variable,
                 "unit": curve.unit, "n": int(curve.t.size)},
        "source": source_block(curve),
        "tau_cycle_s": curve.tau_cycle_s,
        "candidates": [f.to_json() for f in fits],
        "reports": {f.name: f.report for f in fits},
        "comparison": comparison_table(fits, chosen.name),
    }
    runs.atomic_write_json(out / "fit.json", fit_doc)    # kept even if no schedule follows
    try:
        doc = build_document(chosen, fits, tau_cycle_s=curve.tau_cycle_s, source=source_block(curve),
                             n_cycles=cfg.n_cycles, band_level=cfg.band_level,
                             band_samples=cfg.band_samples, seed=cfg.seed, criterion=cfg.criterion)
    except DataError as exc:
        raise DataError(f"{exc} (the fits are in {str(out / 'fit.json')!r}; no retention.json written)") from None
    runs.atomic_write_json(out / "retention.json", doc)
    plots.save_fit_figure(out / "fit.png", curve.t, curve.y, fits, chosen, doc, cfg.plot_T,
                          unit=curve.unit, variable=curve.variable)
    return doc


# --------------------------------------------------------------------------- a sweep
def choose_model(sweep: Sweep, cfg: FitConfig
                 ) -> tuple[str, dict[str, float], dict[str, list[engine.CandidateFit]]]:
    """The candidate with the smallest AICc (or BIC) summed over the sweep's points, the sums,
    and every candidate's fit at every point (``{model: [fit per point, in sweep order]}``)."""
    fits = {name: [engine.fit_model(name, pt.curve.t, pt.curve.y, n_starts=cfg.n_starts, seed=cfg.seed,
                                    offset=cfg.offset, max_nfev=cfg.max_nfev, with_report=False,
                                    where=f"sweep point {pt.point_id!r}") for pt in sweep.points]
            for name in cfg.models}
    totals = {name: sum(getattr(f, cfg.criterion) for f in fs) for name, fs in fits.items()}
    return min(totals, key=totals.get), totals, fits


def fit_sweep(cfg: FitConfig, sweep_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """``distill.fit`` for a sweep: choose the model, fit it globally, write the run directory.

    The retention schedule is built from the shared shape with the first point's amplitude
    (RF does not depend on the amplitude).
    """
    from distill import plots
    from distill.retention import build_document

    check_memory(cfg)
    sweep = load_sweep(sweep_dir, **cfg.curve_selection())
    if cfg.group_by is not None and cfg.group_by not in sweep.keys:
        raise ConfigError(f"group_by = {cfg.group_by!r}: not a swept key of {str(sweep.path)!r}; "
                          f"expected one of {', '.join(sweep.keys) or '(none)'}")
    out = runs.prepare_run_dir(out_dir, cfgmod.to_dict(cfg))
    with runs.Stopwatch() as sw:
        tau_cycle = sweep.tau_cycle_s
        # every candidate is fitted once per point (choose_model); the global fits start from,
        # and compare with, those fits, and the reference point's candidates are its column
        name, totals, point_fits = choose_model(sweep, cfg)
        gf = global_fit(name, [(p.curve.t, p.curve.y) for p in sweep.points],
                        [p.point_id for p in sweep.points], shared=cfg.shared,
                        n_starts=cfg.n_starts, seed=cfg.seed, offset=cfg.offset, independent=point_fits[name])
        groups = _fit_groups(sweep, cfg, name, point_fits[name]) if cfg.group_by else []
        ref = sweep.points[0]
        ref_fit = gf.point_candidate(ref.point_id)
        ref_candidates = engine.weigh([dataclasses.replace(point_fits[m][0]) for m in cfg.models])
        source = {**source_block(ref.curve), "sweep": str(sweep.path),
                  "reference_point": ref.point_id,
                  "points": {p.point_id: {"traces": str(p.curve.path), "sha256": p.curve.sha256,
                                          "grid": p.grid} for p in sweep.points},
                  "sweep_config": sweep.config}
        doc = build_document(ref_fit, ref_candidates, tau_cycle_s=tau_cycle, source=source,
                             n_cycles=cfg.n_cycles, band_level=cfg.band_level,
                             band_samples=cfg.band_samples, seed=cfg.seed, criterion=cfg.criterion,
                             extra={"global_fit": {"model": name, "shared": list(gf.shared),
                                                   "points": len(sweep.points),
                                                   "shared_supported": gf.comparison["shared_supported"]}})
        fit_doc = {"schema": "rmaat.global_fit/v1", "sweep": str(sweep.path), "keys": sweep.keys,
                   "criterion": cfg.criterion, "summed_criterion": totals, "chosen": name,
                   "global": gf.to_json(), "tau_cycle_s": tau_cycle,
                   "grid": {p.point_id: p.grid for p in sweep.points},
                   "independent": {pid: f.to_json() for pid, f in zip(gf.point_ids, gf.independent)},
                   "report": gf.report, "group_by": cfg.group_by, "groups": groups}
        runs.atomic_write_json(out / "fit.json", fit_doc)
        runs.atomic_write_json(out / "retention.json", doc)
        plots.save_global_figure(out / "fit.png", sweep, gf, doc, cfg.plot_T)
    runs.finish_run(out, runs.make_meta(
        stage="fit", seed=cfg.seed, wall_time_s=sw.elapsed, packages=("lmfit", "scipy", "matplotlib"),
        traces=str(sweep.path), chosen_model=name, global_fit=True,
        files={n: runs.sha256_file(out / n) for n in ("fit.json", "retention.json")}))
    return out


def _fit_groups(sweep: Sweep, cfg: FitConfig, name: str,
                independent: list[engine.CandidateFit]) -> list[dict[str, Any]]:
    """One shared-shape fit per value of ``cfg.group_by``, a swept key (groups of fewer than
    2 points noted); ``independent``: the model's fit at each point of the sweep, in order."""
    key = cfg.group_by
    values: list[Any] = []
    for p in sweep.points:
        if p.grid[key] not in values:
            values.append(p.grid[key])
    out = []
    for v in values:
        sel = [i for i, p in enumerate(sweep.points) if p.grid[key] == v]
        pts = [sweep.points[i] for i in sel]
        entry: dict[str, Any] = {"value": v, "points": [p.point_id for p in pts]}
        if len(pts) < 2:
            entry["note"] = "one point: nothing to share"
        else:
            g = global_fit(name, [(p.curve.t, p.curve.y) for p in pts], [p.point_id for p in pts],
                           shared=cfg.shared, n_starts=cfg.n_starts, seed=cfg.seed, offset=cfg.offset,
                           independent=[independent[i] for i in sel])
            entry.update(g.to_json())
            entry["summary"] = summary(g)
        out.append(entry)
    return out


# --------------------------------------------------------------------------- text tables
def comparison_table(fits: list[CandidateFit], chosen: str | None = None) -> str:
    """A plain-text table of the candidates, best AICc first."""
    rows = sorted(fits, key=lambda f: f.aicc)
    best = rows[0].aicc
    lines = [f"{'model':<11} {'k':>2} {'R^2':>10} {'AICc':>10} {'dAICc':>8} {'w_AICc':>7} "
             f"{'BIC':>10} {'DW':>5} {'runs p':>7}  uncertainties"]
    for f in rows:
        dw = f.diagnostics.get("durbin_watson"); rp = f.diagnostics.get("runs_p")
        mark = " *" if f.name == chosen else ""
        lines.append(f"{f.name:<11} {f.k:>2} {f.r2:>10.6f} {f.aicc:>10.2f} {f.aicc - best:>8.2f} "
                     f"{f.akaike_weight:>7.3f} {f.bic:>10.2f} "
                     f"{(dw if dw is not None else math.nan):>5.2f} "
                     f"{(rp if rp is not None else math.nan):>7.3f}  "
                     f"{'ok' if f.uncertainties_ok else 'NOT ESTIMATED: ' + '; '.join(f.uncertainty_problems)}"
                     f"{mark}")
    return "\n".join(lines)


def describe(fit: CandidateFit) -> str:
    """One line per parameter: value ± stderr."""
    out = []
    for p in fit.model.param_names:
        s = fit.stderr.get(p)
        if p not in fit.varied:
            out.append(f"  {p:<9} = {fit.values[p]:.6g} (fixed)")
        elif s is None:
            out.append(f"  {p:<9} = {fit.values[p]:.6g} ± (not estimated)")
        else:
            out.append(f"  {p:<9} = {fit.values[p]:.6g} ± {s:.3g}")
    return "\n".join(out)
