"""The postsynaptic LIF neuron driven by the Tsodyks–Markram release: known answers.

One release r_S = U_0* = 0.6 from rest (u_S = 0, x_S = 1, no gliotransmitter) makes the
synaptic current jump by w_I r_S and decay with tau_syn; the membrane (C_m, g_L, E_L of
Stimberg et al. 2018, example 1) then follows the closed form
    v(t) - E_L = (w_I r_S / g_L) tau_syn/(tau_syn - tau_m) (exp(-t/tau_syn) - exp(-t/tau_m)),
tau_m = C_m/g_L, peaking at t* = tau_syn tau_m/(tau_m - tau_syn) ln(tau_m/tau_syn).
The conductance-based PSP (g jumps by w_e r_S) is checked against SciPy's solve_ivp.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from astro_sim.tripartite.model import TripartiteSimConfig
from astro_sim.tripartite.params import TripartiteParams
from astro_sim.tripartite.protocols import SpikeProtocolConfig
from astro_sim.tripartite.run import run

T_SPIKE = 0.05
DT_MS = 0.1


def psp_run(**params):
    cfg = TripartiteSimConfig(dt_ms=DT_MS, record_dt_ms=DT_MS, params=TripartiteParams(O_G=0.0, **params),
                              record=("v", "I_syn", "g_syn", "n_lif", "r_S", "rho"),
                              protocol=SpikeProtocolConfig(kind="explicit", pre_times_s=(T_SPIKE,),
                                                           explicit_duration_s=0.2))
    out = run(cfg)
    tr = out.traces
    get = lambda v: tr[tr.variable == v].value.to_numpy()
    t = tr[tr.variable == "v"].t_s.to_numpy()
    # the release lands at the end of the spike's step: the PSP starts one step later
    return cfg.params, t - T_SPIKE - DT_MS * 1e-3, get, tr


def test_current_based_psp_of_one_release_is_the_closed_form():
    p, s, get, tr = psp_run(w_e=0.0, w_I=50.0)
    assert set(tr[tr.variable == "v"].unit) == {"mV"} and set(tr[tr.variable == "I_syn"].unit) == {"pA"}
    r = get("r_S").max()
    assert r == pytest.approx(0.6, abs=1e-12)
    tm, ts = p.C_m / p.g_L, p.tau_syn                     # ms
    after = s >= -1e-12
    tt = s[after] * 1e3                                   # ms since the jump
    closed = p.E_L + (p.w_I * r / p.g_L) * ts / (ts - tm) * (np.exp(-tt / ts) - np.exp(-tt / tm))
    v = get("v")
    assert np.all(v[~after] == p.E_L)
    assert np.max(np.abs(v[after] - closed)) < 1e-6       # mV (rk4 at dt = 0.1 ms)
    t_peak = ts * tm / (tm - ts) * np.log(tm / ts)
    assert tt[np.argmax(v[after])] == pytest.approx(t_peak, abs=DT_MS)
    assert v.max() - p.E_L == pytest.approx(float(np.max(closed) - p.E_L), rel=1e-6)
    assert get("n_lif")[-1] == 0


def test_conductance_based_psp_matches_scipy_and_a_strong_release_fires_once():
    p, s, get, _ = psp_run()                              # w_e = 0.05 nS (Stimberg et al. 2018)
    g0 = p.w_e * 0.6
    rhs = lambda t, v: (p.g_L * (p.E_L - v) + g0 * np.exp(-t / p.tau_syn) * (p.E_syn - v)) / p.C_m
    after = s >= -1e-12
    tt = s[after] * 1e3
    ref = solve_ivp(rhs, (0, tt[-1]), [p.E_L], t_eval=tt, rtol=1e-11, atol=1e-13).y[0]
    assert np.max(np.abs(get("v")[after] - ref)) < 1e-7
    assert 0.02 < get("v").max() - p.E_L < 0.04           # ~0.03 mV: one synapse of a COBA network

    p, s, get, _ = psp_run(w_e=0.0, w_I=2000.0)           # 1.2 nA: crosses V_th once
    v, n = get("v"), get("n_lif")
    assert n[-1] == 1
    k = int(np.argmax(n > 0))                             # first sample after the spike
    n_ref = int(round(p.tau_ref / DT_MS))
    # sample k is the reset itself; the n_ref steps after it (tau_ref) are held at V_reset
    assert np.all(v[k: k + n_ref + 1] == p.V_reset)
    assert v[k + n_ref + 1] > p.V_reset                   # then driven by the decaying current
    assert v[k - 1] <= p.V_th < v[k - 1] + 5              # fired from just below threshold
