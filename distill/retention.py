"""The retention schedule from a fitted macro model, its uncertainty, and ``retention.json``.

With one STP cycle (``tau_cycle_s``) per transformer segment and the fitted curve sampled
at cycle boundaries, ``dp_t = p(t tau_cycle) - p((t-1) tau_cycle)``:

    RF(t, T)  = dp_t / sum_{i=1..T} dp_i         (RMAAT, Appendix D; needs T)
    RF_inf(t) = dp_t / (p_inf - p0)              (streaming; the T -> infinity limit of RF)

Both depend only on the shape of the curve, not on its amplitude; the arithmetic is
:mod:`astro_rmaat.retention`'s (``retention_factors``, ``rf_from_curve``, ``rf_delta``), the
same the reader uses. For the exponential, ``RF(t, T) = (1 - r) r^(t-1) / (1 - r^T)`` with
``r = exp(-tau_cycle / tau)``.

Uncertainty bands are propagated from the fit's covariance in two ways. *Sampling* (the
default here): parameter vectors are drawn from N(estimate, covariance) with a seeded
generator (draws outside the fit's bounds are rejected), each is turned into a curve or a
schedule, and the band is the pointwise central ``level`` interval. *Delta method*: the
Jacobian of the curve at cycle boundaries (central differences) linearises RF, whose
variance is then ``G C G^T``; the document stores that Jacobian so the NumPy reader
(``astro_rmaat.retention.Retention.rf_band``) gives the band for any T without the model. A
fit whose covariance could not be estimated gets no band (the document says so) rather than
a falsely narrow one. lmfit's ``ModelResult.eval_uncertainty`` is not used: the file needs
the Jacobian at every cycle boundary for the reader, the sampled band rejects draws outside
the bounds, and a point of the global fit (a block of its covariance) has no ModelResult.

``build_document`` writes the ``rmaat.retention/v1`` layout read by
:mod:`astro_rmaat.retention` (which the torch side uses without lmfit/SciPy/Brian2); every
document is passed through its ``validate_document`` before it is returned.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from astro_rmaat.errors import DataError
from astro_rmaat.retention import SCHEMA, retention_factors, rf_delta, rf_from_curve, validate_document
from distill.models import get_model


# --------------------------------------------------------------------------- schedules
def boundary_curve(name: str, params: dict[str, float], tau_cycle_s: float, K: int) -> np.ndarray:
    """The model at cycle boundaries 0..K (K + 1 values)."""
    return get_model(name)(np.arange(K + 1) * float(tau_cycle_s), **params)


def rf(name: str, params: dict[str, float], tau_cycle_s: float, T: int) -> np.ndarray:
    """RF(t, T) for t = 1..T of the model ``name`` with ``params``."""
    return rf_from_curve(boundary_curve(name, params, tau_cycle_s, T), T)


def rf_inf(name: str, params: dict[str, float], tau_cycle_s: float, n: int) -> np.ndarray:
    """RF_inf(t) = dp_t / (p_inf - p0) for t = 1..n (no T needed)."""
    p = boundary_curve(name, params, tau_cycle_s, n)
    return retention_factors(np.diff(p), span=params["p_inf"] - params["p0"])


def rf_exponential(tau: float, tau_cycle_s: float, T: int) -> np.ndarray:
    """Closed form for the exponential: (1 - r) r^(t-1) / (1 - r^T), r = exp(-tau_cycle/tau)."""
    r = np.exp(-tau_cycle_s / tau)
    t = np.arange(1, T + 1)
    return (1 - r) * r ** (t - 1) / (1 - r ** T)


# --------------------------------------------------------------------------- uncertainty
def sample_params(fit, n: int, seed: int) -> list[dict[str, float]]:
    """``n`` parameter sets drawn from N(estimate, covariance) within the fit's bounds.

    Raises :class:`DataError` when the fit has no usable covariance.
    """
    if fit.covar is None or not fit.uncertainties_ok:
        raise DataError(f"model {fit.name!r}: its uncertainties could not be estimated "
                        f"({'; '.join(fit.uncertainty_problems) or 'no covariance'}); no band")
    rng = np.random.default_rng([int(seed), 7919])
    mean = np.array([fit.values[p] for p in fit.varied])
    draws = rng.multivariate_normal(mean, fit.covar, size=int(n), method="eigh")
    keep = np.ones(len(draws), dtype=bool)
    for j, p in enumerate(fit.varied):
        lo, hi = fit.bounds.get(p, (-np.inf, np.inf))
        keep &= (draws[:, j] >= lo) & (draws[:, j] <= hi)
    draws = draws[keep]
    out = []
    for row in draws:
        v = dict(fit.values)
        v.update(zip(fit.varied, map(float, row)))
        out.append(v)
    return out


def curve_jacobian(fit, tau_cycle_s: float, K: int) -> np.ndarray:
    """d p(k tau_cycle) / d theta_j for k = 0..K and theta = ``fit.varied`` (central differences)."""
    model = get_model(fit.name)
    k = np.arange(K + 1) * float(tau_cycle_s)
    J = np.empty((K + 1, len(fit.varied)))
    for j, name in enumerate(fit.varied):
        v = fit.values[name]
        s = fit.stderr.get(name) or 0.0
        h = max(1e-6 * abs(v), 1e-4 * s, 1e-12)
        lo, hi = fit.bounds.get(name, (-np.inf, np.inf))
        up = dict(fit.values); dn = dict(fit.values)
        up[name] = min(v + h, hi); dn[name] = max(v - h, lo)
        J[:, j] = (model(k, **up) - model(k, **dn)) / (up[name] - dn[name])
    return J


def rf_band_delta(fit, tau_cycle_s: float, T: int, level: float = 0.95,
                  stream: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Delta-method ``level`` band of RF(t, T) (or RF_inf), t = 1..T: RF ± z sd."""
    from statistics import NormalDist

    if fit.covar is None or not fit.uncertainties_ok:
        raise DataError(f"model {fit.name!r}: its uncertainties could not be estimated "
                        f"({'; '.join(fit.uncertainty_problems) or 'no covariance'}); no band")
    p = boundary_curve(fit.name, fit.values, tau_cycle_s, T)
    J = curve_jacobian(fit, tau_cycle_s, T)
    dp = np.diff(p); Jd = np.diff(J, axis=0)
    span = dspan = None
    if stream:
        span = fit.values["p_inf"] - fit.values["p0"]
        dspan = np.array([(n == "p_inf") - (n == "p0") for n in fit.varied], dtype=float)
    val, sd = rf_delta(dp, Jd, fit.covar, span=span, dspan=dspan)
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    return val - z * sd, val + z * sd


def _quantiles(arr: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(arr, [a, 1.0 - a], axis=0)
    return lo, hi


def curve_band(fit, tau_cycle_s: float, K: int, level: float = 0.95, n: int = 2000,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Pointwise ``level`` band of p at boundaries 0..K; also the number of draws used."""
    samples = sample_params(fit, n, seed)
    k = np.arange(K + 1) * float(tau_cycle_s)
    model = get_model(fit.name)
    curves = np.array([model(k, **v) for v in samples])
    curves = curves[np.all(np.isfinite(curves), axis=1)]
    if len(curves) < 10:
        raise DataError(f"model {fit.name!r}: only {len(curves)} usable draws from the covariance")
    lo, hi = _quantiles(curves, level)
    return lo, hi, len(curves)


def rf_band(fit, tau_cycle_s: float, T: int, level: float = 0.95, n: int = 2000,
            seed: int = 0, stream: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise ``level`` band of RF(t, T) (or RF_inf with ``stream=True``), t = 1..T."""
    samples = sample_params(fit, n, seed)
    rows = []
    for v in samples:
        p = boundary_curve(fit.name, v, tau_cycle_s, T)
        dp = np.diff(p)
        span = v["p_inf"] - v["p0"] if stream else dp.sum()
        if span > 0 and np.all(np.isfinite(dp)):
            rows.append(retention_factors(dp, span=span if stream else None))
    if len(rows) < 10:
        raise DataError(f"model {fit.name!r}: only {len(rows)} usable draws from the covariance")
    return _quantiles(np.array(rows), level)


# --------------------------------------------------------------------------- the document
def _params_block(fit) -> dict[str, dict[str, Any]]:
    return {p: {"value": float(fit.values[p]),
                "stderr": None if fit.stderr.get(p) is None else float(fit.stderr[p]),
                "vary": p in fit.varied}
            for p in get_model(fit.name).param_names}


def build_document(chosen, candidates: Iterable, *, tau_cycle_s: float, source: dict[str, Any],
                   n_cycles: int = 1024, band_level: float = 0.95, band_samples: int = 2000,
                   seed: int = 0, criterion: str = "aicc", extra: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The ``rmaat.retention/v1`` document of ``chosen`` (a :class:`~distill.engine.CandidateFit`).

    The curve is tabulated at cycle boundaries 0..``n_cycles`` (K >= 1024). Raises
    :class:`DataError` if the fitted curve is not a rising, saturating trace.
    """
    if n_cycles < 1024:
        raise DataError(f"n_cycles = {n_cycles}: expected >= 1024 cycle boundaries")
    p = boundary_curve(chosen.name, chosen.values, tau_cycle_s, n_cycles)
    if not p[-1] > p[0]:
        raise DataError(f"model {chosen.name!r}: the fitted curve falls (p(0) = {p[0]:.6g}, "
                        f"p(K) = {p[-1]:.6g}); the retention schedule needs a rising trace")
    model_block = {
        "name": chosen.name,
        "formula": get_model(chosen.name).description,
        "params": _params_block(chosen),
        "param_names": list(chosen.varied),
        "covariance": None if chosen.covar is None else chosen.covar.tolist(),
        "uncertainties_ok": bool(chosen.uncertainties_ok),
        "uncertainty_problems": list(chosen.uncertainty_problems),
        "criterion": criterion,
    }
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "model": model_block,
        "candidates": [c.to_json() for c in candidates],
        "tau_cycle_s": float(tau_cycle_s),
        "p_inf": float(chosen.values["p_inf"]),
        "p0": float(chosen.values["p0"]),
        "curve": {"t_cycles": list(range(n_cycles + 1)), "p": p.tolist()},
        "source": source,   # no creation time: wall times live in the run's meta.json
    }
    if chosen.uncertainties_ok and chosen.covar is not None:
        try:
            lo, hi, used = curve_band(chosen, tau_cycle_s, n_cycles, band_level, band_samples, seed)
            from statistics import NormalDist
            doc["band"] = {"p_lo": lo.tolist(), "p_hi": hi.tolist(), "level": band_level,
                           "method": "p_lo/p_hi: pointwise quantiles of curves sampled from "
                                     "N(estimate, covariance), bounds rejected; jacobian: "
                                     "delta method for RF (reader: Retention.rf_band)",
                           "n_samples": used, "seed": seed,
                           "jacobian": curve_jacobian(chosen, tau_cycle_s, n_cycles).tolist(),
                           "z": NormalDist().inv_cdf(0.5 + band_level / 2.0)}
        except DataError as exc:
            doc["band_note"] = f"no band: {exc}"
    else:
        doc["band_note"] = ("no band: the chosen fit's uncertainties could not be estimated ("
                            + "; ".join(chosen.uncertainty_problems) + ")")
    if extra:
        doc.update(extra)
    validate_document(doc, where=f"built from model {chosen.name!r}")
    return doc
