"""The astrocyte at rest, its initial state, the IP3 clamp and bias protocols, bad input.

Known answers derived with SciPy (``scipy.optimize.fsolve`` on the right-hand side, stability
from the Jacobian's eigenvalues) from the published parameters of Stimberg et al. 2018
(example 4 of Brian2's ``examples/frompapers/Stimberg_et_al_2018``, the chapter-18 set plus
F_ex = 2 uM/s, I_Theta = 0.3 uM, omega_I = 0.05 uM, I_bias = 0): the unstimulated astrocyte
rests at I = 0.197985 uM, C = 0.0297638 uM, h = 0.910212 (set ``glioscience-ch18/v2``).
Without the exogenous IP3 flow (F_ex = 0, i.e. ``glioscience-ch18/v1``) the only stable
state is C = 0.43534 uM, reached after a spontaneous Ca2+ spike to 0.981 uM near t = 18 s:
above C_Theta = 0.5 uM, hence one release without input.
"""

from __future__ import annotations

import numpy as np
import pytest

from astro_rmaat.config import from_dict, load_config, to_dict
from astro_rmaat.errors import ConfigError
from astro_sim.tripartite.model import TripartiteSimConfig
from astro_sim.tripartite.params import InitialState, TripartiteParams
from astro_sim.tripartite.protocols import SpikeProtocolConfig
from astro_sim.tripartite.reference import gchi_rest_state, integrate_gchi
from astro_sim.tripartite.run import run


def curve(out, var, element=0):
    tr = out.traces
    sub = tr[(tr.variable == var) & (tr.element == element)]
    return sub.t_s.to_numpy(), sub.value.to_numpy()


def test_rest_state_known_answers_from_the_published_parameters():
    r = gchi_rest_state(TripartiteParams())
    assert r["Gamma_A"] == 0.0
    assert r["I"] == pytest.approx(0.197985, abs=1e-6)
    assert r["C"] == pytest.approx(0.0297638, abs=1e-7)
    assert r["h"] == pytest.approx(0.910212, abs=1e-6)
    assert r["C"] < TripartiteParams().C_Theta / 10          # far below the release threshold
    old = gchi_rest_state(TripartiteParams(F_ex=0.0))         # the set without the term
    assert old["C"] == pytest.approx(0.43534, abs=1e-5) and old["I"] == pytest.approx(0.99749, abs=1e-4)
    # and SciPy integration from the chapter's initial state reaches the same points
    for p, rest in ((TripartiteParams(), r), (TripartiteParams(F_ex=0.0), old)):
        sol = integrate_gchi(p, [0.0, 0.0, 0.0, 0.9], 600.0, rtol=1e-9, atol=1e-12)
        assert np.allclose(sol.y[1:, -1], [rest["I"], rest["C"], rest["h"]], atol=1e-6)
    spike = integrate_gchi(TripartiteParams(F_ex=0.0), [0.0, 0.0, 0.0, 0.9], 40.0,
                           t_eval=np.arange(0, 40.0, 0.01), rtol=1e-9, atol=1e-12)
    assert spike.y[2].max() == pytest.approx(0.981, abs=1e-3)
    assert 17.0 < spike.t[np.argmax(spike.y[2])] < 19.0


@pytest.mark.standalone
def test_without_input_the_astrocyte_rests_and_releases_nothing_for_300_s(tmp_path):
    # cpp_standalone: 2 x 300 000 steps run in C++ (one build in tmp_path, then the second run
    # reuses it), about 23 s against 60 s through the Cython runtime, which steps from Python
    p = TripartiteParams()
    rest = gchi_rest_state(p)
    rec = ("Gamma_A", "I", "C", "h", "n_glio", "G_A", "v", "rho")
    proto = SpikeProtocolConfig(kind="explicit", explicit_duration_s=300.0)
    sa = "cpp_standalone"
    # 1. from the default initial state (the rest state): nothing moves
    out = run(TripartiteSimConfig(record_dt_ms=500.0, protocol=proto, record=rec, target=sa,
                                  standalone_dir=str(tmp_path)))
    for var in ("I", "C", "h"):
        assert np.max(np.abs(curve(out, var)[1] - rest[var])) < 1e-9, var
    assert curve(out, "n_glio")[1][-1] == 0 and np.all(curve(out, "G_A")[1] == 0)
    assert np.all(curve(out, "v")[1] == p.E_L)
    # 2. from the chapter's initial state (I = C = 0, h = 0.9): Brian2 (rk4, dt = 1 ms) follows
    # the SciPy reference (DOP853, rtol 1e-10) to the astrocyte's rest, with no release.
    out = run(TripartiteSimConfig(record_dt_ms=500.0, protocol=proto, record=rec, target=sa,
                                  standalone_dir=str(tmp_path), init=InitialState(I=0.0, C=0.0, h=0.9)))
    t, C = curve(out, "C")
    ref = integrate_gchi(p, [0.0, 0.0, 0.0, 0.9], t[-1], t_eval=t)
    for k, var in enumerate(("I", "C", "h"), start=1):
        assert np.max(np.abs(curve(out, var)[1] - ref.y[k])) < 1e-7, var
        assert curve(out, var)[1][-1] == pytest.approx(rest[var], abs=1e-7), var
    assert C.max() < p.C_Theta and curve(out, "n_glio")[1][-1] == 0


def test_ip3_clamp_holds_ip3_and_matches_the_chi_reference():
    clamps = (0.2, 0.8, 2.0)
    cfg = TripartiteSimConfig(n_units=3, record_dt_ms=100.0, record=("I", "C", "h", "n_glio", "rho"),
                              protocol=SpikeProtocolConfig(kind="ip3_clamp", ip3_clamp_uM=clamps,
                                                           clamp_duration_s=60.0))
    out = run(cfg)
    rest = gchi_rest_state(cfg.params)
    for e, clamp in enumerate(clamps):
        t, I = curve(out, "I", e)
        assert np.all(I == clamp)
        ref = integrate_gchi(cfg.params, [0.0, clamp, rest["C"], rest["h"]], t[-1], t_eval=t,
                             clamp_uM=clamp)
        assert np.max(np.abs(curve(out, "C", e)[1] - ref.y[2])) < 1e-6, clamp
        assert np.max(np.abs(curve(out, "h", e)[1] - ref.y[3])) < 1e-6, clamp
    # 0.8 uM lies inside the oscillation window (repeated releases); below it (0.2 uM) Ca2+
    # stays low, above it (2 uM) it settles high: one crossing, one release
    assert curve(out, "n_glio", 1)[1][-1] >= 3 and curve(out, "n_glio", 0)[1][-1] == 0
    assert curve(out, "n_glio", 2)[1][-1] == 1 and curve(out, "C", 2)[1][-1] > cfg.params.C_Theta


def test_ip3_bias_step_pulls_ip3_up_and_the_astrocyte_releases():
    p = TripartiteParams(w_sic=20.0)
    cfg = TripartiteSimConfig(record_dt_ms=100.0, params=p,
                              record=("I", "C", "n_glio", "I_sic", "v", "rho"),
                              protocol=SpikeProtocolConfig(kind="ip3_bias", n_ip3_pulses=1,
                                                           ip3_bias_uM=1.0, ip3_pulse_s=60.0,
                                                           ip3_period_s=120.0, offset_s=10.0))
    out = run(cfg)
    t, I = curve(out, "I")
    rest = gchi_rest_state(p)
    assert np.allclose(I[t < 9.99], rest["I"], atol=1e-9)     # at rest until the step
    during = (t > 40) & (t < 70)
    assert I[during].min() > 0.5                             # pulled toward the raised bias
    n = curve(out, "n_glio")[1]
    assert n[-1] >= 1 and n[t < 10][-1] == 0
    assert I[-1] == pytest.approx(rest["I"], abs=0.02)       # back toward rest after the step
    assert curve(out, "I_sic")[1].max() > 0 and curve(out, "v")[1].max() > p.E_L   # SIC depolarises


def test_initial_state_is_settable_and_roundtrips():
    cfg = load_config(TripartiteSimConfig, None, ["init.C=0.1", "init.h=0.5", "init.v=-65"])
    assert cfg.init.C == 0.1 and cfg.init.h == 0.5 and cfg.init.I is None
    assert from_dict(TripartiteSimConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("build, match", [
    (lambda: SpikeProtocolConfig(kind="ip3_clamp", ip3_clamp_uM=(0.5, -0.1)),
     r"protocol.ip3_clamp_uM = \[0.5, -0.1\]: expected .*>= 0 uM"),
    (lambda: InitialState(h=1.2), r"init.h = 1.2: expected a fraction in \[0, 1\]"),
    (lambda: InitialState(C=-0.01), r"init.C = -0.01 uM: expected a non-negative concentration"),
    (lambda: TripartiteSimConfig(init=InitialState(C=5.0)), r"init.C = 5.0 uM: expected at most C_T"),
    (lambda: from_dict(TripartiteSimConfig, {"init": {"Ca": 0.1}}), r"unknown parameter 'init.Ca'"),
    (lambda: load_config(TripartiteSimConfig, None, ["init.Ca=0.1"]), r"unknown parameter 'init.Ca'"),
    (lambda: TripartiteParams(V_th=-70.0), r"params.V_th = -70.0 mV is not above params.V_reset = -60.0 mV"),
])
def test_bad_input_is_one_clear_error(build, match):
    with pytest.raises(ConfigError, match=match):
        build()
