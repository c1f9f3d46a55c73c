"""lmfit fits of the macro models to one curve, their uncertainties, and model selection.

One curve ``(t_s, p)`` is fitted by every candidate of :mod:`distill.models` as an
:class:`lmfit.Model` with bounded, named parameters (SciPy's trust-region reflective
``least_squares``, which handles bounds without a variable transform), from up to
``n_starts`` seeded starting points; the best :class:`lmfit.model.ModelResult` is kept, and
the search stops early once two starts reach the same best minimum. Each fit reports

* values, standard errors and the covariance of the varied parameters (lmfit scales the
  covariance by the reduced chi-square, i.e. the noise level is estimated from the
  residuals: standard errors are honest for unweighted data with unknown noise);
* R², AIC, BIC and small-sample AICc (k = number of varied parameters, lmfit's
  convention), Akaike weights (from AICc) and BIC weights across candidates, all from the
  RSS of the reported parameters floored at the data's floating-point resolution (lmfit's
  own ``aic``/``bic`` use another floor, so a noise-free curve would differ);
* residual diagnostics: Durbin–Watson, lag-1 autocorrelation, a Wald–Wolfowitz runs test
  of the residual signs, Shapiro–Wilk normality;
* ``uncertainties_ok``: False — with the reasons in ``uncertainty_problems`` — when
  :func:`check_uncertainties` finds the covariance could not be estimated (singular
  Jacobian), a standard error is not finite, two parameters are perfectly correlated
  (|r| > 0.9999: not separately identifiable), a parameter sits on a bound, or the optimiser
  did not converge. Such a fit is never reported as if it were fine. The global fit of
  :mod:`distill.global_fit` applies the same check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from astro_rmaat.errors import ConfigError, DataError
from distill.curves import check_curve
from distill.models import DEFAULT_CANDIDATES, MODELS, MacroModel, get_model

METHOD = "least_squares"    # scipy's trust-region reflective: native bounds, no sin transform
AGREE_STARTS = 2            # stop early once this many starts reach the same best minimum
AGREE_RTOL = 1e-5           # "same minimum": chi-square within this relative tolerance (ΔAIC ~ N·1e-5)
MAX_CORRELATION = 0.9999    # |correlation| above this: two parameters are one direction


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


# --------------------------------------------------------------------------- statistics
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


def _weights(scores: list[float]) -> list[float]:
    """exp(-Δ/2) normalised over the finite scores (AICc or BIC); 0 for the others."""
    s = np.array(scores, dtype=np.float64)
    finite = np.isfinite(s)
    w = np.zeros_like(s)
    if finite.any():
        d = s[finite] - s[finite].min()
        e = np.exp(-0.5 * d)
        w[finite] = e / e.sum()
    return w.tolist()


# --------------------------------------------------------------------------- uncertainty check
def at_bound(value: float, lo: float, hi: float) -> str | None:
    """"lower" or "upper" when ``value`` sits on that bound (to 1e-6 of the width), else None."""
    width = hi - lo
    tol = 1e-6 * width if math.isfinite(width) else 1e-9 * max(abs(value), 1.0)
    if value - lo <= tol:
        return "lower"
    if hi - value <= tol:
        return "upper"
    return None


def check_uncertainties(varied: tuple[str, ...], values: dict[str, float], covar: np.ndarray | None,
                        bounds: dict[str, tuple[float, float]], *, errorbars: bool, success: bool,
                        message: str) -> tuple[np.ndarray | None, dict[str, float | None], list[str]]:
    """Standard errors of the ``varied`` parameters and every reason not to trust them.

    Checks, in order: the covariance exists (``errorbars``: lmfit could invert the
    Hessian), each standard error is a positive finite number, no two parameters are
    correlated beyond :data:`MAX_CORRELATION` (checked once the first two pass), no
    parameter sits on a bound, and the optimiser converged (``success``). Returns the
    covariance (None when it could not be estimated), the standard errors (None where not
    estimable) and the problems found (empty: the uncertainties can be used).
    """
    problems: list[str] = []
    if covar is None or not errorbars:
        problems.append("covariance could not be estimated (singular or ill-conditioned Jacobian)")
        covar = None
    stderr: dict[str, float | None] = {p: None for p in varied}
    if covar is not None:
        diag = np.diag(covar)
        for i, p in enumerate(varied):
            s = math.sqrt(diag[i]) if diag[i] >= 0 and math.isfinite(diag[i]) else math.nan
            if not math.isfinite(s) or s == 0:
                problems.append(f"stderr of {p!r} is not a positive finite number ({s!r})")
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
        side = at_bound(values[p], *bounds[p])
        if side:
            problems.append(f"{p!r} = {values[p]:.6g} sits on its {side} bound {bounds[p]}")
    if not success:
        problems.append(f"the optimiser did not converge: {message}")
    return covar, stderr, problems


# --------------------------------------------------------------------------- one model
def fit_model(model: MacroModel | str, t, y, *, n_starts: int = 8, seed: int = 0,
              offset: str = "free", max_nfev: int = 4000, with_report: bool = True,
              where: str = "curve") -> CandidateFit:
    """Fit one macro model to ``(t, y)`` from ``n_starts`` seeded starts; keep the best."""
    model = get_model(model) if isinstance(model, str) else model
    if offset not in ("free", "zero", "first"):
        raise ConfigError(f"offset = {offset!r}: expected 'free', 'zero' or 'first'")
    n_vary = len(model.param_names) - (0 if offset == "free" else 1)
    t, y = check_curve(t, y, n_vary, where=f"{where} (model {model.name!r})")
    bounds = model.bounds(t, y)
    if offset == "zero":
        bounds["p0"] = (min(bounds["p0"][0], 0.0), max(bounds["p0"][1], 0.0))
    rng = np.random.default_rng([int(seed), list(MODELS).index(model.name)])

    best, agree = None, 0
    for _ in range(n_starts):
        params = _start_params(model, model.guess(t, y, rng), bounds, offset, y)
        try:
            # lmfit.Model minimises (data - model) * weights; the unit weight -1 keeps the
            # residual model - data. The sign is immaterial to least squares, but the
            # trust-region steps are not bit-for-bit sign-symmetric (signed zeros in Jacobian
            # rows where the model does not depend on the parameters, such as t = 0 with p0
            # fixed at 0), so the sign fixes the last digits of every reported number.
            res = model.lmfit_model.fit(y, params, t=t, weights=-1.0, method=METHOD,
                                        max_nfev=max_nfev)
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


def _start_params(model: MacroModel, guess: dict[str, float], bounds: dict[str, tuple[float, float]],
                 offset: str, y: np.ndarray):
    """lmfit Parameters of one start: the guess moved inside its bounds, ``p0`` fixed per ``offset``."""
    import lmfit

    params = lmfit.Parameters()
    for name in model.param_names:
        lo, hi = bounds[name]
        span = hi - lo
        v = float(np.clip(guess[name], lo + 1e-3 * span, hi - 1e-3 * span))
        params.add(name, value=v, min=lo, max=hi)
    if offset == "zero":
        params["p0"].set(value=0.0, vary=False)
    elif offset == "first":
        params["p0"].set(value=float(y[0]), vary=False)
    return params


def _report(result) -> str:
    """lmfit's text report of a fit (correlations above 0.3).

    A ModelResult's report adds an ``R-squared`` line (lmfit's, from the unfloored RSS);
    it is left out so the report keeps its layout and R² has one value, the candidate's
    ``r2``.
    """
    import lmfit

    text = lmfit.fit_report(result, show_correl=True, min_correl=0.3)
    return "\n".join(line for line in text.split("\n") if not line.lstrip().startswith("R-squared"))


def _to_candidate(model: MacroModel, res, t, y, bounds, with_report: bool) -> CandidateFit:
    """The reported fit from a ModelResult: canonical parameters, checked uncertainties, statistics."""
    values = {p: float(res.params[p].value) for p in model.param_names}
    varied = tuple(p for p in model.param_names if res.params[p].vary)
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
    covar, checked, problems = check_uncertainties(
        varied, values, covar, bounds, errorbars=getattr(res, "errorbars", False),
        success=bool(res.success), message=str(res.message))
    stderr: dict[str, float | None] = {p: None for p in model.param_names}
    stderr.update(checked)
    # statistics from the reported (canonical) parameters; the RSS floored at the
    # floating-point resolution of the data, so a noise-free curve has finite AIC/BIC/AICc
    resid = model.func(t, **values) - y
    n = int(y.size); k = len(varied)
    scale = max(float(np.max(np.abs(y))), 1e-300)
    rss = max(float(resid @ resid), n * (1e-14 * scale) ** 2)
    tss = float(np.sum((y - y.mean()) ** 2))
    aic, bic, aicc = information_criteria(rss, n, k)
    return CandidateFit(
        name=model.name, values=values, stderr=stderr, varied=varied, covar=covar, n=n, rss=rss,
        r2=1.0 - rss / tss if tss > 0 else math.nan, aic=aic, bic=bic, aicc=aicc,
        uncertainties_ok=not problems, uncertainty_problems=problems,
        diagnostics=residual_diagnostics(resid), success=bool(res.success),
        message=str(res.message), nfev=int(res.nfev), report=_report(res) if with_report else "",
        bounds=bounds)


# --------------------------------------------------------------------------- candidates
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
    return weigh([fit_model(m, t, y, n_starts=n_starts, seed=seed, offset=offset, max_nfev=max_nfev,
                            with_report=with_report, where=where) for m in models])


def weigh(fits: list[CandidateFit]) -> list[CandidateFit]:
    """Fill in the Akaike (AICc) and BIC weights of candidates fitted to one curve; returns ``fits``."""
    for f, wa, wb in zip(fits, _weights([f.aicc for f in fits]), _weights([f.bic for f in fits])):
        f.akaike_weight, f.bic_weight = wa, wb
    return fits


def select(fits: list[CandidateFit], criterion: str = "aicc") -> CandidateFit:
    """The candidate with the smallest criterion (``aicc`` or ``bic``)."""
    if criterion not in ("aicc", "bic"):
        raise ConfigError(f"criterion = {criterion!r}: expected 'aicc' or 'bic'")
    return min(fits, key=lambda f: (getattr(f, criterion), f.k))
