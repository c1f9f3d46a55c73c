"""Independent SciPy integrations of the tripartite family's astrocytes (no Brian2).

Used by the model (the rest state), the tests and the benchmarks to check the Brian2 models.

The G-ChI astrocyte
    the astrocyte of the tripartite synapse without synaptic input (Y_S = 0), written again
    in NumPy from its equations (docs/tripartite.md; Computational Glioscience ch. 18 and
    Stimberg et al. 2018, example 4): state y = [Gamma_A, I, C, h], concentrations in uM,
    time in s. Parameters are read from a :class:`astro_sim.tripartite.params.TripartiteParams`
    (its units are the ones used here).
NEST's ``astrocyte_lr_1994``
    the astrocyte of :mod:`astro_sim.tripartite.nest_models` written again in NumPy (NEST's
    equations, its units: uM and ms).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp


# ----------------------------------------------------------------------------- the G-ChI astrocyte


def gchi_rhs(p, I_bias: float | None = None, clamp_uM: float | None = None):
    """f(t, y) of the unstimulated G-ChI astrocyte; ``clamp_uM`` holds I (the ChI subsystem)."""
    bias = p.I_bias if I_bias is None else I_bias

    def f(t: float, y: np.ndarray) -> np.ndarray:
        gamma_a, I, C, h = y
        if clamp_uM is not None:
            I = clamp_uM
        dgamma = -p.Omega_N * (1 + p.zeta * C / (C + p.K_KC)) * gamma_a
        j_beta = p.O_beta * gamma_a
        j_delta = p.O_delta / (1 + I / p.kappa_delta) * C**2 / (C**2 + p.K_delta**2)
        j_3k = p.O_3K * C**4 / (C**4 + p.K_D**4) * I / (I + p.K_3K)
        j_5p = p.Omega_5P * I
        d = I - bias
        j_ex = -p.F_ex / 2 * (1 + np.tanh((abs(d) - p.I_Theta) / p.omega_I)) * np.sign(d)
        dI = 0.0 if clamp_uM is not None else j_beta + j_delta - j_3k - j_5p + j_ex
        m_inf = I / (I + p.d_1) * C / (C + p.d_5)
        free = p.C_T - (1 + p.rho_A) * C
        dC = (p.Omega_C * m_inf**3 * h**3 + p.Omega_L) * free - p.O_P * C**2 / (C**2 + p.K_P**2)
        q2 = p.d_2 * (I + p.d_1) / (I + p.d_3)
        dh = (q2 / (q2 + C) - h) * p.O_2 * (q2 + C)
        return np.array([dgamma, dI, dC, dh])

    return f


def integrate_gchi(p, y0, t_end_s: float, t_eval=None, *, clamp_uM: float | None = None,
                   rtol: float = 1e-10, atol: float = 1e-13):
    """solve_ivp (DOP853) of the unstimulated astrocyte from ``y0`` = [Gamma_A, I, C, h]."""
    y0 = np.array(y0, dtype=float)
    if clamp_uM is not None:
        y0[1] = clamp_uM
    sol = solve_ivp(gchi_rhs(p, clamp_uM=clamp_uM), (0.0, t_end_s), y0, method="DOP853",
                    t_eval=t_eval, rtol=rtol, atol=atol, max_step=0.5)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    return sol


#: the rest state of glioscience-ch18/v2 (I_bias = 0), the first guess of the root search
_REST_GUESSES = ((0.19798, 0.029764, 0.91021), (1.0, 0.435, 0.584), (0.05, 0.05, 0.9),
                 (2.0, 0.2, 0.5))


def gchi_rest_state(p) -> dict[str, float]:
    """The stable steady state {Gamma_A, I, C, h} (uM) of the unstimulated astrocyte.

    A root of the right-hand side (Gamma_A = 0 without input) whose Jacobian has only
    eigenvalues with negative real part; a :class:`ConfigError` when there is none (the
    astrocyte oscillates at rest: give the initial state explicitly).
    """
    from scipy.optimize import fsolve

    from astro_rmaat.errors import ConfigError
    f = gchi_rhs(p)
    for guess in _REST_GUESSES:
        z, _, ok, _ = fsolve(lambda z: f(0.0, np.array([0.0, *z]))[1:], np.array(guess),
                             full_output=True, xtol=1e-13)
        y = np.array([0.0, *z])
        if (ok != 1 or np.max(np.abs(f(0.0, y))) > 1e-11 or z[0] < 0 or z[1] < 0
                or not 0 <= z[2] <= 1):
            continue
        jac = np.empty((3, 3))          # central differences in (I, C, h)
        for k in range(3):
            e = np.zeros(4)
            e[k + 1] = 1e-7 * max(1.0, abs(y[k + 1]))
            jac[:, k] = (f(0.0, y + e)[1:] - f(0.0, y - e)[1:]) / (2 * e[k + 1])
        if np.all(np.linalg.eigvals(jac).real < 0):
            return {"Gamma_A": 0.0, "I": float(z[0]), "C": float(z[1]), "h": float(z[2])}
    raise ConfigError("the astrocyte has no stable rest state for these parameters (it "
                      "oscillates without input); expected explicit initial values "
                      "init.I, init.C and init.h")


# ----------------------------------------------------------------------------- NEST's astrocyte_lr_1994
# State y = [IP3, Ca_astro, h_IP3R]; ``v`` holds the values of the set
# ``nest-astrocyte_lr_1994/v1`` (``NestModelConfig.values()``).
def lr1994_rhs(v: dict[str, float]):
    """f(t, y) of ``astrocyte_lr_1994`` between input spikes."""

    def f(t: float, y: np.ndarray) -> list[float]:
        ip3, ca, h = y
        ca = min(max(ca, 0.0), v["Ca_tot"])               # NEST keeps Ca2+ within [0, Ca_tot]
        ca_er = (v["Ca_tot"] - ca) / v["ratio_ER_cyt"]
        m_inf = ip3 / (ip3 + v["Kd_IP3_1"])
        n_inf = ca / (ca + v["Kd_act"])
        j_channel = v["ratio_ER_cyt"] * v["rate_IP3R"] * (m_inf * n_inf * h) ** 3 * (ca_er - ca)
        j_pump = v["rate_SERCA"] * ca**2 / (v["Km_SERCA"] ** 2 + ca**2)
        j_leak = v["ratio_ER_cyt"] * v["rate_L"] * (ca_er - ca)
        alpha = v["k_IP3R"] * v["Kd_inh"] * (ip3 + v["Kd_IP3_1"]) / (ip3 + v["Kd_IP3_2"])
        return [(v["IP3_0"] - ip3) / v["tau_IP3"], j_channel - j_pump + j_leak,
                alpha * (1.0 - h) - v["k_IP3R"] * ca * h]

    return f


def integrate_lr1994(v: dict[str, float], t_eval_ms: np.ndarray, spike_times_ms=(),
                     weight: float = 1.0, *, rtol: float = 1e-13, atol: float = 1e-15) -> np.ndarray:
    """[IP3, Ca_astro, h_IP3R] at ``t_eval_ms`` (rows), from the initial state in ``v``.

    solve_ivp (DOP853) piece by piece between the input spikes; at each spike IP3 jumps by
    ``delta_IP3 * weight``, and a value asked for at a spike's time includes its jump.
    """
    t_eval = np.asarray(t_eval_ms, dtype=np.float64)
    y = np.array([v["IP3"], v["Ca_astro"], v["h_IP3R"]], dtype=np.float64)
    out = np.empty((t_eval.size, 3))
    out[t_eval == 0.0] = y
    edges = sorted({0.0, *map(float, spike_times_ms), float(t_eval.max())})
    f = lr1994_rhs(v)
    for a, b in zip(edges[:-1], edges[1:]):
        idx = np.flatnonzero((t_eval > a) & (t_eval <= b))
        te = np.unique(np.append(t_eval[idx], b))
        sol = solve_ivp(f, (a, b), y, method="DOP853", t_eval=te, rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed on [{a}, {b}] ms: {sol.message}")
        out[idx] = sol.y[:, np.searchsorted(te, t_eval[idx])].T
        y = sol.y[:, -1].copy()
        if b in spike_times_ms:
            y[0] += v["delta_IP3"] * weight
            out[t_eval == b] = y
    return out
