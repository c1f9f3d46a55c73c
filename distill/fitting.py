"""lmfit fits of the macro models, model selection, and the ``distill.fit`` stage entry.

One curve ``(t_s, p)`` is fitted by every candidate of :mod:`distill.models` with bounded,
named lmfit parameters (SciPy's trust-region reflective ``least_squares``, which handles
bounds without a variable transform), from up to ``n_starts`` seeded starting points; the
best is kept, and the search stops early once two starts reach the same best minimum. Each fit reports

* values, standard errors and the covariance of the varied parameters (lmfit scales the
  covariance by the reduced chi-square, i.e. the noise level is estimated from the
  residuals: standard errors are honest for unweighted data with unknown noise);
* R², AIC, BIC and small-sample AICc (k = number of varied parameters, lmfit's
  convention), Akaike weights (from AICc) and BIC weights across candidates;
* residual diagnostics: Durbin–Watson, lag-1 autocorrelation, a Wald–Wolfowitz runs test
  of the residual signs, Shapiro–Wilk normality;
* ``uncertainties_ok``: False — with the reasons in ``uncertainty_problems`` — when the
  covariance could not be estimated (singular Jacobian), a standard error is not finite,
  a parameter sits on a bound, or two parameters are
  perfectly correlated (|r| > 0.9999: not separately identifiable). Such a fit is never reported as if it were fine.

``fit(cfg, traces_path, out_dir)`` is the stage entry: it writes ``fit.json``,
``retention.json`` and ``fit.png`` into a run directory (``config.json`` first,
``meta.json`` last).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from astro_rmaat import config as cfgmod
from astro_rmaat import runs
from astro_rmaat.errors import ConfigError, DataError, show
from distill.models import DEFAULT_CANDIDATES, MODELS, MacroModel, get_model


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
    max_nfev: int = 4000                 # cap on model evaluations per start
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


# --------------------------------------------------------------------------- results
@dataclass
class CandidateFit:
    """One model fitted to one curve."""

    name: str
    values: dict[str, float]                 # every parameter (fixed ones included)
    stderr: dict[str, float | None]          # None for a fixed parameter or when not estimable
    varied: tuple[str, ...]                  # names of the fitted parameters (covariance order)
    covar: np.ndarray | None                 # (k, k) covariance of ``varied``, or None
    n: int                                   # data points
    rss: float                               # residual sum of squares
    r2: float
    aic: float
    bic: float
    aicc: float
    uncertainties_ok: bool
    uncertainty_problems: list[str]
    diagnostics: dict[str, float | None]
    success: bool
    message: str
    nfev: int
    report: str = field(default="", repr=False)
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)
    akaike_weight: float = math.nan          # from AICc, filled in across candidates
    bic_weight: float = math.nan

    @property
    def k(self) -> int:
        return len(self.varied)

    @property
    def model(self) -> MacroModel:
        return MODELS[self.name]

    def predict(self, t) -> np.ndarray:
        return self.model(t, **self.values)

    def to_json(self) -> dict[str, Any]:
        def num(x):
            return None if x is None or not math.isfinite(x) else float(x)
        return {
            "name": self.name,
            "formula": self.model.description,
            "params": {p: {"value": float(self.values[p]), "stderr": num(self.stderr.get(p)),
                           "vary": p in self.varied,
                           "bounds": [num(b) for b in self.bounds[p]] if p in self.bounds else None}
                       for p in self.model.param_names},
            "param_names": list(self.varied),
            "covariance": None if self.covar is None else self.covar.tolist(),
            "n": self.n, "k": self.k, "rss": num(self.rss), "r2": num(self.r2),
            "aic": num(self.aic), "bic": num(self.bic), "aicc": num(self.aicc),
            "akaike_weight": num(self.akaike_weight), "bic_weight": num(self.bic_weight),
            "uncertainties_ok": self.uncertainties_ok,
            "uncertainty_problems": list(self.uncertainty_problems),
            "diagnostics": {k: num(v) if isinstance(v, float) else v for k, v in self.diagnostics.items()},
            "success": self.success, "message": self.message, "nfev": self.nfev,
        }


# --------------------------------------------------------------------------- input checks
def check_curve(t, y, n_params: int = 0, where: str = "curve") -> tuple[np.ndarray, np.ndarray]:
    """Float arrays of a fittable curve, or one clear :class:`DataError`."""
    t = np.asarray(t, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if t.size == 0 or y.size == 0:
        raise DataError(f"{where}: the trace is empty; expected samples of the slow variable")
    if t.shape != y.shape:
        raise DataError(f"{where}: {t.size} times but {y.size} values; expected one value per time")
    for label, arr in (("time", t), ("value", y)):
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: {label} at index {i} is {show(arr[i])}; expected finite numbers "
                            "(NaN/inf in the trace)")
    if t.size > 1 and not np.all(np.diff(t) > 0):
        i = int(np.flatnonzero(np.diff(t) <= 0)[0])
        raise DataError(f"{where}: time is not increasing (t[{i}] = {show(t[i])} s, "
                        f"t[{i + 1}] = {show(t[i + 1])} s); expected strictly increasing times")
    if t[0] < 0:
        raise DataError(f"{where}: first time {show(t[0])} s is negative; expected time since the "
                        "protocol started (t >= 0)")
    if t.size < n_params + 2:
        raise DataError(f"{where}: {t.size} points for a model with {n_params} fitted parameters; "
                        f"expected at least {n_params + 2} (parameters plus two)")
    if np.ptp(y) == 0:
        raise DataError(f"{where}: the trace is constant ({show(y[0])}); nothing saturates")
    return t, y


def check_rises(t: np.ndarray, y: np.ndarray, where: str = "curve") -> None:
    """A retention schedule needs a trace that rises: its last quarter above its first.

    Every macro model here is a saturating rise, so a falling trace can be fitted but gives
    no schedule; refusing it here stops the run before its directory is made.
    """
    q = max(1, y.size // 4)
    first, last = float(np.mean(y[:q])), float(np.mean(y[-q:]))
    if not last > first:
        raise DataError(f"{where}: the trace falls (mean of the first {q} sample(s) {first:.4g}, "
                        f"of the last {q} {last:.4g}); expected a rising, saturating trace")


# --------------------------------------------------------------------------- diagnostics
def residual_diagnostics(resid: np.ndarray) -> dict[str, float | None]:
    """Durbin–Watson, lag-1 autocorrelation, runs test of signs, Shapiro–Wilk normality."""
    r = np.asarray(resid, dtype=np.float64)
    n = r.size
    ss = float(np.sum(r * r))
    out: dict[str, float | None] = {
        "durbin_watson": float(np.sum(np.diff(r) ** 2) / ss) if ss > 0 else None,
        "lag1_autocorr": float(np.sum(r[1:] * r[:-1]) / ss) if ss > 0 and n > 1 else None,
    }
    signs = np.sign(r[r != 0])
    n1 = int(np.sum(signs > 0)); n2 = int(np.sum(signs < 0)); m = n1 + n2
    if n1 > 0 and n2 > 0 and m > 2:
        runs_obs = 1 + int(np.sum(signs[1:] != signs[:-1]))
        mu = 2.0 * n1 * n2 / m + 1.0
        var = 2.0 * n1 * n2 * (2.0 * n1 * n2 - m) / (m * m * (m - 1.0))
        z = (runs_obs - mu) / math.sqrt(var) if var > 0 else 0.0
        out.update(runs=float(runs_obs), runs_expected=float(mu), runs_z=float(z),
                   runs_p=float(math.erfc(abs(z) / math.sqrt(2.0))))
    else:
        out.update(runs=None, runs_expected=None, runs_z=None, runs_p=None)
    if 3 <= n <= 5000 and ss > 0:
        from scipy import stats
        w, p = stats.shapiro(r)
        out.update(shapiro_w=float(w), shapiro_p=float(p))
    else:
        out.update(shapiro_w=None, shapiro_p=None)
    return out


def information_criteria(rss: float, n: int, k: int) -> tuple[float, float, float]:
    """AIC, BIC, AICc of a least-squares fit (Gaussian noise, k fitted parameters)."""
    ll = n * math.log(rss / n)
    aic = ll + 2 * k
    bic = ll + k * math.log(n)
    aicc = aic + 2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.inf
    return aic, bic, aicc


# --------------------------------------------------------------------------- one fit
_METHOD = "least_squares"   # scipy's trust-region reflective: native bounds, no sin transform
AGREE_STARTS = 2            # stop early once this many starts reach the same best minimum
AGREE_RTOL = 1e-5           # "same minimum": chi-square within this relative tolerance (ΔAIC ~ N·1e-5)
MAX_CORRELATION = 0.9999     # |correlation| above this: two parameters are one direction
def _at_bound(value: float, lo: float, hi: float) -> str | None:
    width = hi - lo
    tol = 1e-6 * width if math.isfinite(width) else 1e-9 * max(abs(value), 1.0)
    if value - lo <= tol:
        return "lower"
    if hi - value <= tol:
        return "upper"
    return None


def fit_model(model: MacroModel | str, t, y, *, n_starts: int = 8, seed: int = 0,
              offset: str = "free", max_nfev: int = 4000, with_report: bool = True,
              where: str = "curve") -> CandidateFit:
    """Fit one macro model to ``(t, y)`` from ``n_starts`` seeded starts; keep the best."""
    import lmfit

    model = get_model(model) if isinstance(model, str) else model
    if offset not in ("free", "zero", "first"):
        raise ConfigError(f"offset = {offset!r}: expected 'free', 'zero' or 'first'")
    n_vary = len(model.param_names) - (0 if offset == "free" else 1)
    t, y = check_curve(t, y, n_vary, where=f"{where} (model {model.name!r})")
    bounds = model.bounds(t, y)
    if offset == "zero":
        bounds["p0"] = (min(bounds["p0"][0], 0.0), max(bounds["p0"][1], 0.0))
    rng = np.random.default_rng([int(seed), list(MODELS).index(model.name)])

    def residual(params):
        return model.func(t, **params.valuesdict()) - y

    best, agree = None, 0
    for _ in range(n_starts):
        g = model.guess(t, y, rng)
        params = lmfit.Parameters()
        for name in model.param_names:
            lo, hi = bounds[name]
            span = hi - lo
            v = float(np.clip(g[name], lo + 1e-3 * span, hi - 1e-3 * span))
            params.add(name, value=v, min=lo, max=hi)
        if offset == "zero":
            params["p0"].set(value=0.0, vary=False)
        elif offset == "first":
            params["p0"].set(value=float(y[0]), vary=False)
        try:
            res = lmfit.minimize(residual, params, method=_METHOD, max_nfev=max_nfev)
        except (ValueError, FloatingPointError):
            continue
        if not np.isfinite(res.chisqr):
            continue
        if best is not None and abs(res.chisqr - best.chisqr) <= AGREE_RTOL * best.chisqr:
            agree += 1
        elif best is None or res.chisqr < best.chisqr:
            best, agree = res, 1
        if agree >= AGREE_STARTS:
            break           # the best minimum was found from two independent starts
    if best is None:
        raise DataError(f"{where}: model {model.name!r} could not be fitted from any of "
                        f"{n_starts} starting points (non-finite residuals)")
    return _to_candidate(model, best, t, y, bounds, with_report)


def _to_candidate(model: MacroModel, res, t, y, bounds, with_report: bool) -> CandidateFit:
    import lmfit

    values = {p: float(res.params[p].value) for p in model.param_names}
    varied = tuple(p for p in model.param_names if res.params[p].vary)
    problems: list[str] = []
    covar = None if res.covar is None else np.array(res.covar, dtype=np.float64)
    if covar is not None and list(res.var_names) != list(varied):
        idx = [list(res.var_names).index(p) for p in varied]
        covar = covar[np.ix_(idx, idx)]
    if model.canonical is not None:
        J, c = model.canonical(values)
        x = np.array([values[p] for p in model.param_names])
        x = J @ x + c
        values = dict(zip(model.param_names, map(float, x)))
        if covar is not None:
            vi = [model.param_names.index(p) for p in varied]
            Jv = J[np.ix_(vi, vi)]
            covar = Jv @ covar @ Jv.T
    if covar is None or not getattr(res, "errorbars", False):
        problems.append("covariance could not be estimated (singular or ill-conditioned Jacobian)")
        covar = None
    stderr: dict[str, float | None] = {p: None for p in model.param_names}
    if covar is not None:
        diag = np.diag(covar)
        for i, p in enumerate(varied):
            s = math.sqrt(diag[i]) if diag[i] >= 0 and math.isfinite(diag[i]) else math.nan
            if not math.isfinite(s) or s == 0:
                problems.append(f"stderr of {p!r} is not a positive finite number ({s!r})")
                stderr[p] = None
            else:
                stderr[p] = s
    if covar is not None and not problems and len(varied) > 1:
        sd = np.sqrt(np.diag(covar))
        corr = covar / np.outer(sd, sd)
        iu = np.triu_indices(len(varied), 1)
        worst = int(np.argmax(np.abs(corr[iu])))
        if abs(corr[iu][worst]) > MAX_CORRELATION:
            a, b = varied[iu[0][worst]], varied[iu[1][worst]]
            problems.append(f"{a!r} and {b!r} are not separately identifiable "
                            f"(correlation {corr[iu][worst]:+.6f})")
    for p in varied:
        side = _at_bound(values[p], *bounds[p])
        if side:
            problems.append(f"{p!r} = {values[p]:.6g} sits on its {side} bound {bounds[p]}")
    if not res.success:
        problems.append(f"the optimiser did not converge: {res.message}")
    resid = model.func(t, **values) - y
    n = int(y.size); k = len(varied)
    scale = max(float(np.max(np.abs(y))), 1e-300)
    rss = max(float(resid @ resid), n * (1e-14 * scale) ** 2)   # floor: floating-point resolution
    tss = float(np.sum((y - y.mean()) ** 2))
    aic, bic, aicc = information_criteria(rss, n, k)
    report = ""
    if with_report:
        report = lmfit.fit_report(res, show_correl=True, min_correl=0.3)
    return CandidateFit(
        name=model.name, values=values, stderr=stderr, varied=varied, covar=covar, n=n, rss=rss,
        r2=1.0 - rss / tss if tss > 0 else math.nan, aic=aic, bic=bic, aicc=aicc,
        uncertainties_ok=not problems, uncertainty_problems=problems,
        diagnostics=residual_diagnostics(resid), success=bool(res.success),
        message=str(res.message), nfev=int(res.nfev), report=report, bounds=bounds)


# --------------------------------------------------------------------------- candidates
def _weights(scores: list[float]) -> list[float]:
    s = np.array(scores, dtype=np.float64)
    finite = np.isfinite(s)
    w = np.zeros_like(s)
    if finite.any():
        d = s[finite] - s[finite].min()
        e = np.exp(-0.5 * d)
        w[finite] = e / e.sum()
    return w.tolist()


def fit_candidates(t, y, models=DEFAULT_CANDIDATES, *, n_starts: int = 8, seed: int = 0,
                   offset: str = "free", max_nfev: int = 4000, with_report: bool = True,
                   where: str = "curve") -> list[CandidateFit]:
    """Fit every candidate; fill in Akaike (AICc) and BIC weights. Order follows ``models``."""
    n_points = np.asarray(t).size
    for m in models:
        n_vary = len(get_model(m).param_names) - (0 if offset == "free" else 1)
        if 0 < n_points < n_vary + 2:
            raise DataError(f"{where}: {n_points} points for model {m!r} with {n_vary} fitted "
                            f"parameters; expected at least {n_vary + 2} (parameters plus two); "
                            "drop it from the candidates or supply a longer trace")
    fits = [fit_model(m, t, y, n_starts=n_starts, seed=seed, offset=offset, max_nfev=max_nfev,
                      with_report=with_report, where=where) for m in models]
    for f, wa, wb in zip(fits, _weights([f.aicc for f in fits]), _weights([f.bic for f in fits])):
        f.akaike_weight, f.bic_weight = wa, wb
    return fits


def select(fits: list[CandidateFit], criterion: str = "aicc") -> CandidateFit:
    """The candidate with the smallest criterion (``aicc`` or ``bic``)."""
    if criterion not in ("aicc", "bic"):
        raise ConfigError(f"criterion = {criterion!r}: expected 'aicc' or 'bic'")
    return min(fits, key=lambda f: (getattr(f, criterion), f.k))


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


# --------------------------------------------------------------------------- loading a curve
@dataclass
class Curve:
    """One curve selected from a traces file, with where it came from."""

    t: np.ndarray                 # s
    y: np.ndarray                 # trace units
    variable: str
    unit: str
    tau_cycle_s: float
    attrs: dict[str, Any]
    path: Path
    sha256: str


def resolve_traces_path(path: str | os.PathLike) -> Path:
    """A traces/samples file, or a simulation run directory (its ``samples.parquet``)."""
    p = Path(path)
    if p.is_dir():
        for name in ("samples.parquet", "traces.parquet"):
            if (p / name).is_file():
                return p / name
        raise DataError(f"directory {str(p)!r} holds neither samples.parquet nor traces.parquet "
                        "(nor design.parquet of a sweep); expected a simulation run directory")
    if not p.exists():
        raise DataError(f"traces path {str(p)!r} does not exist")
    return p


def load_curve(path: str | os.PathLike, cfg: FitConfig) -> Curve:
    """Read ``path`` and select the curve ``cfg`` names (variable, element, reduction)."""
    from astro_rmaat.traces import read_traces, select_curve

    p = resolve_traces_path(path)
    df = read_traces(p)
    attrs = dict(df.attrs)
    variable = cfg.variable or attrs.get("slow_variable") or "p_l"
    t, y = select_curve(df, variable, cfg.element, cfg.reduce)
    units = df.loc[df["variable"] == variable, "unit"].unique().tolist()
    tau_cycle = cfg.tau_cycle_s if cfg.tau_cycle_s is not None else attrs.get("tau_cycle_s")
    if tau_cycle is None or not (isinstance(tau_cycle, (int, float)) and tau_cycle > 0):
        raise DataError(f"traces file {str(p)!r}: tau_cycle_s = {tau_cycle!r} in its attrs; expected "
                        "a positive cycle length in seconds (pass tau_cycle_s in the fit config)")
    t, y = check_curve(t, y, where=f"{str(p)!r} variable {variable!r}")
    check_rises(t, y, where=f"{str(p)!r} variable {variable!r}")
    return Curve(t=t, y=y, variable=variable, unit=units[0] if units else "1",
                 tau_cycle_s=float(tau_cycle), attrs=attrs, path=p, sha256=runs.sha256_file(p))


# --------------------------------------------------------------------------- the stage entry
def fit(cfg: FitConfig, traces_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Fit ``cfg.models`` to the trace and write ``fit.json``, ``retention.json``, ``fit.png``.

    ``traces_path`` may be a samples/traces Parquet file, a simulation run directory, or a
    sweep directory (``design.parquet`` + ``points/``), which runs the global fit instead.
    Returns the run directory.
    """
    if not isinstance(cfg, FitConfig):
        raise ConfigError(f"fit() needs a FitConfig, got {type(cfg).__name__}")
    runs.check_out_dir(out_dir)           # finished, or not writable: before reading anything
    if (Path(traces_path) / "design.parquet").is_file():
        from distill.global_fit import fit_sweep
        return fit_sweep(cfg, traces_path, out_dir)
    curve = load_curve(traces_path, cfg)
    out = runs.prepare_run_dir(out_dir, cfgmod.to_dict(cfg))
    with runs.Stopwatch() as sw:
        fits = fit_candidates(curve.t, curve.y, cfg.models, n_starts=cfg.n_starts, seed=cfg.seed,
                              offset=cfg.offset, max_nfev=cfg.max_nfev,
                              where=f"{str(curve.path)!r} variable {curve.variable!r}")
        chosen = select(fits, cfg.criterion)
        write_outputs(out, cfg, curve, fits, chosen)
    runs.finish_run(out, runs.make_meta(
        stage="fit", seed=cfg.seed, wall_time_s=sw.elapsed, packages=("lmfit", "scipy", "matplotlib"),
        traces=str(curve.path), traces_sha256=curve.sha256, chosen_model=chosen.name,
        files={name: runs.sha256_file(out / name) for name in ("fit.json", "retention.json")}))
    return out


def source_block(curve: Curve) -> dict[str, Any]:
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
