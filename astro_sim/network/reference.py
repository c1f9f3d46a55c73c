"""An independent integration of the RMAAT network with ``scipy.integrate.solve_ivp``.

Same equations (written again here in NumPy), same parameter object, same geometry and
protocol as :mod:`astro_sim.network.model`, but no Brian2: the coupling tensor is a dense
matrix from :func:`astro_sim.network.params.coupling_matrix`, and the drive is handled by
integrating piece by piece between its switch times (an adaptive solver must not step
across a discontinuity). Used by the tests to check the Brian2 model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from astro_sim.network.model import NetworkSimConfig
from astro_sim.network.params import coupling_matrix, neuron_positions_um, synapse_pairs
from astro_sim.network.protocols import drive_segments


@dataclass
class ReferenceSolution:
    t_s: np.ndarray                 # (n_t,)
    x: np.ndarray                   # (n_neurons, n_t)
    s: np.ndarray                   # (n_synapses, n_t)
    p_s: np.ndarray                 # (n_synapses, n_t)
    p_l: np.ndarray                 # (n_synapses, n_t)
    boundaries_p_l: np.ndarray      # (n_synapses, n_cycles + 1): p_l at t = k tau_cycle

    def get(self, variable: str) -> np.ndarray:
        return getattr(self, variable)


def rhs_factory(cfg: NetworkSimConfig):
    """f(t, y, b) for the state y = [x (N), s (S), p_s (S), p_l (S)] in 1/s."""
    p = cfg.params
    geom = cfg.geometry
    n, n_syn = geom.n_neurons, geom.n_synapses
    pre, post = synapse_pairs(geom)
    T = coupling_matrix(p, neuron_positions_um(geom, cfg.seed), pre, post)
    mask = cfg.protocol.driven_mask(n)
    tau_n, tau_s, tau_ps = p.tau_n_ms * 1e-3, p.tau_s_ms * 1e-3, p.tau_ps_ms * 1e-3
    # sum over synapses into their postsynaptic neuron, as a matrix (N, S)
    to_post = np.zeros((n, n_syn))
    to_post[post, np.arange(n_syn)] = 1.0

    def f(t: float, y: np.ndarray, amplitude: float) -> np.ndarray:
        x, s = y[:n], y[n:n + n_syn]
        p_s, p_l = y[n + n_syn:n + 2 * n_syn], y[n + 2 * n_syn:]
        phi_pre = np.tanh(x[pre])
        dx = (-p.lam * x + to_post @ (s * phi_pre) + amplitude * mask) / tau_n
        ds = (-p.beta * s + phi_pre * np.tanh(x[post]) + np.tanh(p_s)) / tau_s
        dps = (-p.gamma_s * p_s + T @ np.tanh(p_s) + np.tanh(s)) / tau_ps
        dpl = (-p.gamma_l * p_l + np.tanh(s)) / p.tau_pl_s
        return np.concatenate([dx, ds, dps, dpl])

    return f, n, n_syn


def integrate(cfg: NetworkSimConfig, *, rtol: float = 1e-10, atol: float = 1e-12,
              method: str = "DOP853") -> ReferenceSolution:
    """Integrate ``cfg``'s protocol; sample every ``record_interval_ms`` and at cycle ends."""
    f, n, n_syn = rhs_factory(cfg)
    y = np.zeros(n + 3 * n_syn)
    rec = cfg.record_interval_ms * 1e-3
    duration = cfg.protocol.duration_s
    t_grid = np.arange(int(np.floor(duration / rec + 1e-9)) + 1) * rec
    out = np.empty((y.size, t_grid.size))
    out[:, 0] = y
    boundaries = [y[n + 2 * n_syn:].copy()]
    max_step = cfg.params.tau_n_ms * 1e-3  # never let the solver stride over the fastest scale
    tol = 1e-9 * rec
    for t0, t1, amp in drive_segments(cfg.protocol):
        idx = np.flatnonzero((t_grid > t0 + tol) & (t_grid <= t1 + tol))
        t_eval = np.append(np.minimum(t_grid[idx], t1), t1)
        t_eval = np.unique(t_eval)
        sol = solve_ivp(f, (t0, t1), y, method=method, t_eval=t_eval, args=(amp,),
                        rtol=rtol, atol=atol, max_step=max_step)
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed on [{t0}, {t1}] s: {sol.message}")
        for k, i in enumerate(idx):
            out[:, i] = sol.y[:, int(np.argmin(np.abs(sol.t - t_grid[i])))]
        y = sol.y[:, -1]
        if abs((t1 / cfg.protocol.tau_cycle_s) - round(t1 / cfg.protocol.tau_cycle_s)) < 1e-9:
            boundaries.append(y[n + 2 * n_syn:].copy())
    return ReferenceSolution(t_s=t_grid, x=out[:n], s=out[n:n + n_syn],
                             p_s=out[n + n_syn:n + 2 * n_syn], p_l=out[n + 2 * n_syn:],
                             boundaries_p_l=np.stack(boundaries, axis=1))
