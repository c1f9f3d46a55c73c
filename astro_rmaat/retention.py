"""``retention.json`` — the file between ``distill`` and ``rmaat_model`` (schema ``rmaat.retention/v1``).

The RMAAT paper (Appendix D) compresses the memory handed from segment t to segment t+1 by

    dp_t      = p(t * tau_cycle) - p((t - 1) * tau_cycle)          (t = 1, 2, ...)
    RF(t, T)  = dp_t / sum_{i=1..T} dp_i                            (needs T in advance)
    RF_inf(t) = dp_t / (p_inf - p(0))                               (streaming; no T)

where p is the fitted macro model of the long-term astrocytic trace and one STP cycle is
one segment. ``RF_inf`` is the paper's ``dp_t / p_inf`` written for a curve that need not
start at 0; both sum to 1 (over T, resp. over all t).

This module reads, validates and evaluates the file, with NumPy alone: the torch side
imports it without lmfit, SciPy or Brian2. ``distill`` writes it (``build_document``) and
computes every retention factor with the functions here (``retention_factors``,
``rf_from_curve``, ``rf_delta``), so RF is written down once.

File layout (JSON object)::

    schema        "rmaat.retention/v1"
    model         {"name": str, "params": {name: {"value": float, "stderr": float|null}},
                   "param_names": [str], "covariance": [[float]]|null, "uncertainties_ok": bool}
    candidates    [{"name", "params", "r2", "aic", "aicc", "bic", "akaike_weight",
                    "uncertainties_ok", ...}]
    tau_cycle_s   float > 0       one STP cycle (= one segment), seconds
    p_inf         float           asymptote of the chosen model, trace units
    curve         {"t_cycles": [0, 1, ..., K], "p": [p(k * tau_cycle)]}   chosen model
    band          optional {"p_lo": [...], "p_hi": [...]} (same grid; pointwise band of p),
                  optionally also "jacobian": [[dp_k/dtheta_j]] ((K+1) x len(model.param_names))
                  and "z" (normal quantile of the band level): with model.covariance they give
                  the delta-method band of RF(t, T) for any T (see ``Retention.rf_band``)
    source        {"traces": str, "sha256": str, "variable": str, "unit": str,
                   "simulation_config": {...}}
    (older files may also hold ``created_utc``; the finish time now lives in meta.json)

Parameter names follow one convention the reader checks: any parameter whose name starts
with ``tau`` or ``t_half`` is a time (seconds) and must be positive.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astro_rmaat.config import read_json_file
from astro_rmaat.errors import DataError, show

SCHEMA = "rmaat.retention/v1"
TIME_PREFIXES = ("tau", "t_half")


@dataclass(frozen=True)
class Retention:
    """A validated retention schedule. ``p`` is the macro model at cycle boundaries 0..K."""

    model_name: str
    params: dict[str, float]
    tau_cycle_s: float
    p_inf: float
    p: np.ndarray = field(repr=False)
    p_lo: np.ndarray | None = field(default=None, repr=False)
    p_hi: np.ndarray | None = field(default=None, repr=False)
    document: dict[str, Any] = field(default_factory=dict, repr=False)
    covariance: np.ndarray | None = field(default=None, repr=False)  # of model.param_names
    jacobian: np.ndarray | None = field(default=None, repr=False)    # (K+1, k): dp_k / dtheta_j
    z: float | None = None                                           # band half-width in sd
    param_names: tuple[str, ...] = ()

    @property
    def max_segments(self) -> int:
        return int(self.p.size - 1)

    def increments(self, n: int) -> np.ndarray:
        """dp_1 .. dp_n (float64)."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise DataError(f"number of segments {n!r}: expected an integer >= 1")
        if n > self.max_segments:
            raise DataError(f"number of segments {n} exceeds the {self.max_segments} cycles "
                            "tabulated in the retention file; regenerate it with more cycles")
        return np.diff(self.p[: n + 1])

    def rf(self, T: int) -> np.ndarray:
        """RF(t, T) for t = 1..T; sums to 1."""
        return retention_factors(self.increments(T))

    def rf_stream(self, n: int) -> np.ndarray:
        """RF_inf(t) for t = 1..n; needs no T (sums to 1 only as n -> infinity)."""
        return retention_factors(self.increments(n), span=self.p_inf - self.p[0])

    def rf_band(self, T: int, stream: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise band of RF(t, T) (or of RF_inf with ``stream=True``), when the file has one.

        With a Jacobian and covariance in the file this is the delta-method band
        RF ± z·sd, sd from the linearised RF (exact to first order for every T). Older
        files with only ``p_lo``/``p_hi`` get the cruder band from differencing those.
        """
        if self.jacobian is not None and self.covariance is not None and self.z is not None:
            dp = self.increments(T)
            Jd = np.diff(self.jacobian[: T + 1], axis=0)               # (T, k)
            span = dspan = None
            if stream:
                span = self.p_inf - self.p[0]
                dspan = -self.jacobian[0].copy()
                if "p_inf" in self.param_names:
                    dspan[self.param_names.index("p_inf")] += 1.0
            val, sd = rf_delta(dp, Jd, self.covariance, span=span, dspan=dspan)
            return val - self.z * sd, val + self.z * sd
        if self.p_lo is None or self.p_hi is None:
            return None
        lo = np.diff(self.p_lo[: T + 1]); hi = np.diff(self.p_hi[: T + 1])
        lo_rf = lo / lo.sum(); hi_rf = hi / hi.sum()
        return np.minimum(lo_rf, hi_rf), np.maximum(lo_rf, hi_rf)


def retention_factors(dp: np.ndarray, *, span: float | None = None) -> np.ndarray:
    """RF(t, T) = dp_t / sum(dp) from the increments dp_1..dp_T; with ``span``, RF_inf(t) = dp_t / span.

    Raises :class:`DataError` when the increments do not add up to a rise (RF(t, T) needs one).
    """
    dp = np.asarray(dp, dtype=np.float64)
    if span is not None:
        return dp / span
    total = dp.sum()
    if not total > 0:
        raise DataError(f"the curve does not rise over the first {dp.size} cycles (sum dp = {show(total)}); "
                        "the retention factor needs a rising trace")
    return dp / total


def rf_from_curve(p: np.ndarray, T: int | None = None) -> np.ndarray:
    """RF(t, T), t = 1..T, from a curve at cycle boundaries 0..(>= T); sums to 1."""
    p = np.asarray(p, dtype=np.float64)
    T = p.size - 1 if T is None else int(T)
    if T < 1 or T > p.size - 1:
        raise DataError(f"T = {T}: expected 1 <= T <= {p.size - 1} (cycles tabulated)")
    return retention_factors(np.diff(p[: T + 1]))


def rf_delta(dp: np.ndarray, Jd: np.ndarray, covariance: np.ndarray, *,
             span: float | None = None, dspan: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Retention factors and their delta-method standard deviations.

    ``dp`` (T,) are the increments, ``Jd`` (T, k) their derivatives with respect to the k
    fitted parameters, ``covariance`` (k, k) the parameters' covariance. Without ``span``
    this is RF(t, T) = dp_t / sum(dp); with it, the streaming RF_inf(t) = dp_t / span,
    where ``dspan`` (k,) is d span / d parameters.
    """
    val = retention_factors(dp, span=span)
    if span is None:
        total = dp.sum()
        G = Jd / total - np.outer(dp, Jd.sum(axis=0)) / total ** 2
    else:
        G = Jd / span - np.outer(dp, dspan) / span ** 2
    sd = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", G, covariance, G), 0.0))
    return val, sd


def _err(where: str, msg: str) -> DataError:
    return DataError(f"retention file {where}: {msg}")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_document(doc: Any, where: str = "<document>") -> Retention:
    """Check every field the torch side relies on; return the :class:`Retention`."""
    if not isinstance(doc, dict):
        raise _err(where, "expected a JSON object at the top level")
    if doc.get("schema") != SCHEMA:
        raise _err(where, f"schema is {doc.get('schema')!r}; expected {SCHEMA!r}")
    for key in ("model", "tau_cycle_s", "p_inf", "curve", "source", "candidates"):
        if key not in doc:
            raise _err(where, f"missing field {key!r}")
    tau_cycle = doc["tau_cycle_s"]
    if not _finite(tau_cycle) or tau_cycle <= 0:
        raise _err(where, f"tau_cycle_s = {tau_cycle!r}; expected a finite positive number of seconds")
    model = doc["model"]
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise _err(where, "model must be an object with a 'name'")
    params_doc = model.get("params")
    if not isinstance(params_doc, dict) or not params_doc:
        raise _err(where, "model.params must be a non-empty object")
    params: dict[str, float] = {}
    for name, entry in params_doc.items():
        value = entry.get("value") if isinstance(entry, dict) else None
        if not _finite(value):
            raise _err(where, f"model parameter {name!r} = {value!r}; expected a finite number")
        if name.startswith(TIME_PREFIXES) and value <= 0:
            raise _err(where, f"time constant {name!r} = {value!r} s; expected a positive number")
        params[name] = float(value)
    p_inf = doc["p_inf"]
    if not _finite(p_inf):
        raise _err(where, f"p_inf = {p_inf!r}; expected a finite number")
    curve = doc["curve"]
    if not isinstance(curve, dict) or "p" not in curve:
        raise _err(where, "curve must be an object with 'p' (the model at cycle boundaries)")
    try:
        p = np.asarray(curve["p"], dtype=np.float64)
    except (TypeError, ValueError):
        raise _err(where, "curve.p must be a list of numbers") from None
    if p.ndim != 1 or p.size < 3:
        raise _err(where, f"curve.p has {p.size} values; expected at least 3 cycle boundaries")
    if not np.all(np.isfinite(p)):
        raise _err(where, "curve.p holds non-finite values")
    dp = np.diff(p)
    if np.any(dp < 0) or dp[0] <= 0:
        i = int(np.flatnonzero(dp < 0)[0]) if np.any(dp < 0) else 0
        raise _err(where, f"curve is not monotone increasing (dp at cycle {i + 1} = {show(dp[i])}); "
                          "expected a rising, saturating long-term trace")
    if not dp[-1] < dp[0]:
        raise _err(where, f"curve does not saturate (last increment {show(dp[-1])} >= first {show(dp[0])})")
    span = p_inf - p[0]
    if not span > 0 or p[-1] > p_inf + 1e-9 * max(1.0, abs(p_inf)):
        raise _err(where, f"p_inf = {show(p_inf)} must lie above the curve (p(0) = {show(p[0])}, "
                          f"p(K) = {show(p[-1])})")
    band = doc.get("band") or {}
    p_lo = np.asarray(band["p_lo"], dtype=np.float64) if "p_lo" in band else None
    p_hi = np.asarray(band["p_hi"], dtype=np.float64) if "p_hi" in band else None
    for name, arr in (("band.p_lo", p_lo), ("band.p_hi", p_hi)):
        if arr is not None and (arr.shape != p.shape or not np.all(np.isfinite(arr))):
            raise _err(where, f"{name} must be {p.size} finite numbers like curve.p")
    names = model.get("param_names") or []
    cov = jac = z = None
    if "jacobian" in band:
        k = len(names)
        try:
            jac = np.asarray(band["jacobian"], dtype=np.float64)
            cov = np.asarray(model.get("covariance"), dtype=np.float64)
        except (TypeError, ValueError):
            raise _err(where, "band.jacobian and model.covariance must be numeric matrices") from None
        if jac.shape != (p.size, k) or not np.all(np.isfinite(jac)):
            raise _err(where, f"band.jacobian must be {p.size} x {k} finite numbers "
                              f"(cycle boundaries x model.param_names)")
        if cov.shape != (k, k) or not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
            raise _err(where, f"model.covariance must be a {k} x {k} finite matrix with a "
                              "non-negative diagonal when band.jacobian is given")
        z = band.get("z")
        if not _finite(z) or z <= 0:
            raise _err(where, f"band.z = {z!r}; expected a positive number (sd per half-width)")
    return Retention(model_name=model["name"], params=params, tau_cycle_s=float(tau_cycle),
                     p_inf=float(p_inf), p=p, p_lo=p_lo, p_hi=p_hi, document=doc,
                     covariance=cov, jacobian=jac, z=None if z is None else float(z),
                     param_names=tuple(names))


def load_retention(path: str | os.PathLike) -> Retention:
    """Read and validate a ``retention.json``."""
    doc = read_json_file(path, "retention", DataError)
    return validate_document(doc, where=repr(str(Path(path))))


def default_retention_path() -> Path:
    """The shipped schedule distilled from the default RMAAT-network simulation (package data,
    so a wheel install finds it; ``scripts/make_default_retention.py`` rebuilds it)."""
    path = Path(__file__).resolve().parent / "data" / "retention" / "default.json"
    if not path.is_file():
        raise DataError(f"the shipped default retention file {str(path)!r} is missing; "
                        "reinstall astro-rmaat or pass --retention FILE")
    return path
