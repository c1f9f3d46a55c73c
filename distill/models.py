"""Saturating macro models of the long-term astrocytic trace, as plain NumPy functions.

Every model has the same outer form

    p(t) = p0 + (p_inf - p0) * g(t; shape)          g(0) = 0,  g(t) -> 1 as t -> infinity

with ``t`` the time in seconds since the protocol started (t >= 0), ``p0`` the value at
t = 0 and ``p_inf`` the asymptote, both in the trace's units. Only ``g`` differs. Writing
the amplitude this way has two consequences the rest of ``distill`` relies on:

* the retention factor ``RF(t, T) = dp_t / sum dp_i`` depends on the shape parameters
  only, never on ``p0`` or ``p_inf`` (so conditions that differ in amplitude alone share
  one schedule, which is what :mod:`distill.global_fit` tests);
* the streaming form ``RF_inf(t) = dp_t / (p_inf - p0)`` is the paper's ``dp_t / p_inf``
  for a curve that starts at 0.

**p(0) offset handling** (decided once, for every model): ``p0`` is a parameter. The fit
either estimates it (``offset="free"``, the default: a simulated trace usually starts at
its resting value, not exactly 0, and an estimated offset does not bias the time
constant), fixes it at 0 (``offset="zero"``, the paper's form ``p_inf (1 - exp(-t/tau))``),
or fixes it at the first sample (``offset="first"``). A fixed ``p0`` is not counted as a
fitted parameter in AIC/BIC.

Parameter names follow the retention-file convention: a name starting with ``tau`` or
``t_half`` is a time in seconds (positive).

==============  =========================================================  ====================
name            g(t)                                                       shape parameters
==============  =========================================================  ====================
``exp``         1 - exp(-t/tau)                                             tau (s)
``hill``        t^n / (t^n + t_half^n)          (Hill in time)              t_half (s), n
``mm``          t / (t + t_half)                (Michaelis–Menten, n = 1)   t_half (s)
``double_exp``  w (1 - exp(-t/tau_fast)) + (1 - w)(1 - exp(-t/tau_slow))    tau_fast, tau_slow (s), w
``power``       1 - (1 + t/tau)^(-alpha)        (saturating power law)      tau (s), alpha
==============  =========================================================  ====================

``power`` is the heavy-tailed member: it is a gamma-distributed mixture of exponentials and
approaches ``exp`` with time constant tau/alpha as alpha grows. ``double_exp`` is reported
with ``tau_fast <= tau_slow`` (the fit's label-switching twin is mapped back).

Each model's function is written beside its bounds and its seeded starting guess (named
functions, ``exp_bounds``/``exp_guess`` and so on); :attr:`MacroModel.lmfit_model` wraps the
function as an :class:`lmfit.Model` for the fits in :mod:`distill.engine`. Importing this
module does not import lmfit; it loads when a model is first fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np


# --------------------------------------------------------------------------- the models
# Per model: its function of t (seconds), the bounds of its shape parameters from the
# sampling step and the time span, and a seeded guess of them from the half-rise time.
Bounds = dict[str, tuple[float, float]]


def _time_bounds(dt_min: float, t_span: float) -> tuple[float, float]:
    return (1e-3 * dt_min, 1e3 * t_span)


def exp_saturation(t, p0, p_inf, tau):
    """Exponential saturation; reaches 63 % of the rise at t = tau."""
    t = np.asarray(t, dtype=np.float64)
    return p0 + (p_inf - p0) * -np.expm1(-t / tau)


def exp_bounds(dt_min: float, t_span: float) -> Bounds:
    return {"tau": _time_bounds(dt_min, t_span)}


def exp_guess(t_half: float, rng: np.random.Generator) -> dict[str, float]:
    return {"tau": t_half / np.log(2.0)}


def hill(t, p0, p_inf, t_half, n):
    """Hill function of time; half rise at t = t_half, sigmoidal for n > 1."""
    t = np.asarray(t, dtype=np.float64)
    x = np.power(np.maximum(t, 0.0) / t_half, n)
    return p0 + (p_inf - p0) * (x / (1.0 + x))


def hill_bounds(dt_min: float, t_span: float) -> Bounds:
    return {"t_half": _time_bounds(dt_min, t_span), "n": (0.1, 10.0)}


def hill_guess(t_half: float, rng: np.random.Generator) -> dict[str, float]:
    return {"t_half": t_half, "n": float(rng.uniform(0.6, 2.5))}


def michaelis_menten(t, p0, p_inf, t_half):
    """Michaelis–Menten in time (Hill with n = 1); concave, slow 1/t approach."""
    t = np.asarray(t, dtype=np.float64)
    return p0 + (p_inf - p0) * (t / (t + t_half))


def mm_bounds(dt_min: float, t_span: float) -> Bounds:
    return {"t_half": _time_bounds(dt_min, t_span)}


def mm_guess(t_half: float, rng: np.random.Generator) -> dict[str, float]:
    return {"t_half": t_half}


def double_exp(t, p0, p_inf, tau_fast, tau_slow, w):
    """Two exponential components; ``w`` is the fraction of the rise carried by tau_fast."""
    t = np.asarray(t, dtype=np.float64)
    g = w * -np.expm1(-t / tau_fast) + (1.0 - w) * -np.expm1(-t / tau_slow)
    return p0 + (p_inf - p0) * g


def double_exp_bounds(dt_min: float, t_span: float) -> Bounds:
    return {"tau_fast": _time_bounds(dt_min, t_span), "tau_slow": _time_bounds(dt_min, t_span),
            "w": (0.0, 1.0)}


def double_exp_guess(t_half: float, rng: np.random.Generator) -> dict[str, float]:
    return {"tau_fast": t_half * float(rng.uniform(0.15, 0.6)),
            "tau_slow": t_half * float(rng.uniform(1.5, 6.0)),
            "w": float(rng.uniform(0.25, 0.75))}


def double_exp_canonical(v: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Map (tau_fast > tau_slow) onto its twin (swap the taus, w -> 1 - w)."""
    names = ("p0", "p_inf", "tau_fast", "tau_slow", "w")
    J = np.eye(len(names)); c = np.zeros(len(names))
    if v["tau_fast"] > v["tau_slow"]:
        J[2, 2] = J[3, 3] = 0.0
        J[2, 3] = J[3, 2] = 1.0
        J[4, 4] = -1.0; c[4] = 1.0
    return J, c


def power_law(t, p0, p_inf, tau, alpha):
    """Saturating power law 1 - (1 + t/tau)^-alpha; tail ~ (t/tau)^-alpha."""
    t = np.asarray(t, dtype=np.float64)
    g = -np.expm1(-alpha * np.log1p(np.maximum(t, 0.0) / tau))
    return p0 + (p_inf - p0) * g


def power_bounds(dt_min: float, t_span: float) -> Bounds:
    return {"tau": _time_bounds(dt_min, t_span), "alpha": (0.05, 50.0)}


def power_guess(t_half: float, rng: np.random.Generator) -> dict[str, float]:
    alpha = float(np.exp(rng.uniform(np.log(0.5), np.log(5.0))))
    return {"tau": t_half / np.expm1(np.log(2.0) / alpha), "alpha": alpha}   # half rise at t_half


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class MacroModel:
    """One candidate: its function, parameter names, bounds and seeded initial guesses.

    ``bounds(t, y)`` and ``guess(t, y, rng)`` scale with the data (times with the time
    span, levels with the value range), so one registry serves traces in any units.
    ``lmfit_model`` is the same function as an :class:`lmfit.Model` of ``t`` (built, and
    lmfit imported, on first use).
    """

    name: str
    func: Callable[..., np.ndarray]
    shape_names: tuple[str, ...]            # parameters of g (p0, p_inf come first)
    shape_bounds: Callable[[float, float], Bounds]   # (dt_min, t_span) -> bounds
    shape_guess: Callable[[float, np.random.Generator], dict[str, float]]  # (t_half, rng) -> guess
    description: str = ""
    canonical: Callable[[dict[str, float]], tuple[np.ndarray, np.ndarray]] | None = field(
        default=None, repr=False)           # values -> (J, c): canonical = J @ x + c

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("p0", "p_inf", *self.shape_names)

    @cached_property
    def lmfit_model(self):
        """``func`` as an :class:`lmfit.Model` with independent variable ``t``."""
        import lmfit

        return lmfit.Model(self.func, independent_vars=["t"], name=self.name)

    def __call__(self, t, **params) -> np.ndarray:
        return self.func(t, **{k: params[k] for k in self.param_names})

    def bounds(self, t: np.ndarray, y: np.ndarray) -> Bounds:
        t = np.asarray(t, dtype=np.float64); y = np.asarray(y, dtype=np.float64)
        span_y = float(np.ptp(y)) or max(abs(float(y.mean())), 1.0)
        lo, hi = float(y.min()), float(y.max())
        dts = np.diff(t)
        dt_min = float(dts[dts > 0].min()) if np.any(dts > 0) else 1.0
        t_span = float(t.max() - min(t.min(), 0.0)) or 1.0
        b: Bounds = {"p0": (lo - 10 * span_y, hi + 10 * span_y),
                     # slow power laws and Hill curves may saturate far above the data
                     "p_inf": (lo - 1e3 * span_y, hi + 1e3 * span_y)}
        b.update(self.shape_bounds(dt_min, t_span))
        return b

    def guess(self, t: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
        """A seeded starting point: levels from the data, times around the half-rise time."""
        t = np.asarray(t, dtype=np.float64); y = np.asarray(y, dtype=np.float64)
        p0 = float(y[0])
        rise = float(y[-1] - y[0])
        p_inf = float(y[-1] + 0.1 * rise)
        # time to half of the observed rise, in seconds
        frac = (y - y[0]) / rise if rise != 0 else np.linspace(0, 1, y.size)
        i_half = int(np.argmax(frac >= 0.5))
        t_half = float(max(t[i_half], t[min(1, t.size - 1)], 1e-12))
        scale = float(np.exp(rng.normal(0.0, 0.5)))   # log-normal jitter of the time scale
        g = {"p0": p0, "p_inf": p_inf + rng.normal(0.0, 0.05) * abs(rise)}
        g.update(self.shape_guess(t_half * scale, rng))
        return g


MODELS: dict[str, MacroModel] = {
    "exp": MacroModel("exp", exp_saturation, ("tau",), exp_bounds, exp_guess,
                      "p0 + (p_inf - p0) (1 - exp(-t/tau))"),
    "hill": MacroModel("hill", hill, ("t_half", "n"), hill_bounds, hill_guess,
                       "p0 + (p_inf - p0) t^n / (t^n + t_half^n)"),
    "mm": MacroModel("mm", michaelis_menten, ("t_half",), mm_bounds, mm_guess,
                     "p0 + (p_inf - p0) t / (t + t_half)"),
    "double_exp": MacroModel(
        "double_exp", double_exp, ("tau_fast", "tau_slow", "w"), double_exp_bounds, double_exp_guess,
        "p0 + (p_inf - p0) [w (1 - exp(-t/tau_fast)) + (1 - w)(1 - exp(-t/tau_slow))]",
        canonical=double_exp_canonical),
    "power": MacroModel("power", power_law, ("tau", "alpha"), power_bounds, power_guess,
                        "p0 + (p_inf - p0) [1 - (1 + t/tau)^-alpha]"),
}

#: the candidates fitted when none are named (``mm`` is nested in ``hill``; ask for it by name)
DEFAULT_CANDIDATES: tuple[str, ...] = ("exp", "hill", "double_exp", "power")


def get_model(name: str) -> MacroModel:
    from astro_rmaat.errors import ConfigError

    if name not in MODELS:
        raise ConfigError(f"macro model {name!r} is unknown; expected one of {', '.join(MODELS)}")
    return MODELS[name]


def evaluate(name: str, t, params: dict[str, float]) -> np.ndarray:
    """Evaluate the registered model ``name`` at times ``t`` (s) with ``params``."""
    return get_model(name)(t, **params)
