"""distill.retention: RF closed form, invariants, streaming limit, bands, the document."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from astro_rmaat import retention as reader
from astro_rmaat.errors import DataError
from distill import engine, models
from distill import retention as R

TAU_CYCLE = 1.0
CONCAVE = {
    "exp": dict(p0=0.0, p_inf=1.0, tau=7.0),
    "mm": dict(p0=0.1, p_inf=0.9, t_half=5.0),
    "double_exp": dict(p0=0.0, p_inf=1.0, tau_fast=1.5, tau_slow=15.0, w=0.4),
    "power": dict(p0=0.0, p_inf=2.0, tau=10.0, alpha=3.0),
    "hill": dict(p0=0.0, p_inf=1.0, t_half=6.0, n=0.8),   # n < 1: concave
}


@pytest.mark.parametrize("tau, tau_cycle, T", [(7.0, 1.0, 16), (0.4, 1.0, 8), (300.0, 2.5, 64)])
def test_rf_matches_closed_form_for_exponential(tau, tau_cycle, T):
    params = dict(p0=0.3, p_inf=1.7, tau=tau)
    r = np.exp(-tau_cycle / tau)
    t = np.arange(1, T + 1)
    expected = (1 - r) * r ** (t - 1) / (1 - r ** T)
    np.testing.assert_allclose(R.rf("exp", params, tau_cycle, T), expected, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(R.rf_exponential(tau, tau_cycle, T), expected, rtol=1e-12)


@pytest.mark.parametrize("name", list(CONCAVE))
@pytest.mark.parametrize("T", [1, 5, 32])
def test_rf_sums_to_one_and_falls_for_concave_curves(name, T):
    rf = R.rf(name, CONCAVE[name], TAU_CYCLE, T)
    assert rf.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(rf > 0)
    assert np.all(np.diff(rf) < 0)
    # for fixed t, RF falls as T grows (the memory is shared by more segments)
    if T > 1:
        assert np.all(R.rf(name, CONCAVE[name], TAU_CYCLE, 2 * T)[:T] < rf)


@pytest.mark.parametrize("name", list(CONCAVE))
def test_rf_inf_is_the_large_T_limit(name):
    params = CONCAVE[name]
    stream = R.rf_inf(name, params, TAU_CYCLE, 8)
    gaps = [np.max(np.abs(R.rf(name, params, TAU_CYCLE, T)[:8] - stream)) for T in (8, 64, 4096, 2 ** 20)]
    assert gaps[0] > gaps[1] and all(a >= b - 1e-15 for a, b in zip(gaps, gaps[1:]))  # monotone approach
    tail = 1.0 - (models.evaluate(name, 2 ** 20 * TAU_CYCLE, params) - params["p0"]) / (params["p_inf"] - params["p0"])
    assert gaps[-1] <= 1.01 * stream[0] * tail + 1e-14         # limited by the unsaturated remainder


def test_band_from_covariance_covers_the_truth():
    """The 95 % band of RF(t, T) from the covariance contains the true schedule in most fits."""
    truth = dict(p0=0.0, p_inf=0.5, tau=8.0)
    t = np.arange(41.0)
    T = 16
    true_rf = R.rf("exp", truth, TAU_CYCLE, T)
    inside = []
    for s in range(25):
        y = models.evaluate("exp", t, truth) + np.random.default_rng(s).normal(0, 0.005, t.size)
        f = engine.fit_model("exp", t, y, n_starts=1, with_report=False)
        lo, hi = R.rf_band(f, TAU_CYCLE, T, level=0.95, n=300, seed=s)
        assert np.all(lo <= R.rf("exp", f.values, TAU_CYCLE, T) + 1e-12)
        inside.append(np.mean((lo <= true_rf) & (true_rf <= hi)))
    print(f"\nfraction of RF(t, {T}) points inside the 95 % band: {np.mean(inside):.3f}")
    assert 0.85 <= np.mean(inside) <= 1.0


def _doc(name="exp", seed=0, **kw):
    t = np.arange(41.0)
    truth = {"exp": dict(p0=0.0, p_inf=0.5, tau=8.0), "hill": dict(p0=0.0, p_inf=0.6, t_half=10.0, n=2.0)}[name]
    y = models.evaluate(name, t, truth) + np.random.default_rng(seed).normal(0, 0.005, t.size)
    fits = engine.fit_candidates(t, y, ["exp", "hill"], n_starts=2, with_report=False)
    chosen = engine.select(fits)
    source = {"traces": "synthetic", "sha256": "0" * 64, "variable": "p_l", "unit": "1",
              "simulation_config": {"synthetic": name}}
    return chosen, R.build_document(chosen, fits, tau_cycle_s=TAU_CYCLE, source=source,
                                    band_samples=300, **kw)


def test_document_round_trips_through_the_numpy_reader(tmp_path):
    chosen, doc = _doc()
    path = tmp_path / "retention.json"
    from astro_rmaat.runs import atomic_write_json
    atomic_write_json(path, doc)
    r = reader.load_retention(path)
    assert r.model_name == chosen.name == "exp"
    assert r.max_segments >= 1024 and len(doc["curve"]["t_cycles"]) == r.max_segments + 1
    np.testing.assert_allclose(r.rf(16), R.rf("exp", chosen.values, TAU_CYCLE, 16), rtol=1e-12)
    np.testing.assert_allclose(r.rf_stream(8), R.rf_inf("exp", chosen.values, TAU_CYCLE, 8), rtol=1e-12)
    assert doc["model"]["params"]["tau"]["stderr"] > 0 and doc["model"]["uncertainties_ok"]
    assert {c["name"] for c in doc["candidates"]} == {"exp", "hill"}
    for c in doc["candidates"]:
        assert {"aicc", "bic", "r2", "akaike_weight"} <= set(c)
    # the reader's delta-method band (NumPy only) equals distill's and agrees with sampling
    chosen_fit = chosen
    for stream in (False, True):
        lo, hi = r.rf_band(16, stream=stream)
        dlo, dhi = R.rf_band_delta(chosen_fit, TAU_CYCLE, 16, stream=stream)
        np.testing.assert_allclose(lo, dlo, rtol=1e-6); np.testing.assert_allclose(hi, dhi, rtol=1e-6)
        slo, shi = R.rf_band(chosen_fit, TAU_CYCLE, 16, n=4000, seed=1, stream=stream)
        np.testing.assert_allclose(hi - lo, shi - slo, rtol=0.15)
        mid = r.rf_stream(16) if stream else r.rf(16)
        assert np.all(lo < mid) and np.all(mid < hi)
    assert np.all(r.p_lo <= r.p + 1e-12) and np.all(r.p <= r.p_hi + 1e-12)


def test_sigmoidal_hill_schedule_rises_then_falls():
    chosen, doc = _doc("hill")
    assert chosen.name == "hill"
    rf = reader.validate_document(doc).rf(32)
    assert rf.sum() == pytest.approx(1.0) and np.argmax(rf) > 0


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.update(schema="rmaat.retention/v2"), "schema"),
    (lambda d: d["model"]["params"]["tau"].update(value=-8.0), "time constant 'tau'"),
    (lambda d: d.update(tau_cycle_s=-1.0), "tau_cycle_s"),
    (lambda d: d["curve"].update(p=[0.0, 0.1, float("nan")] + d["curve"]["p"][3:]), "non-finite"),
    (lambda d: d.pop("curve"), "missing field 'curve'"),
    (lambda d: d["band"].update(jacobian=d["band"]["jacobian"][:10]), "band.jacobian must be"),
    (lambda d: d["band"].update(z=-1.0), "band.z"),
])
def test_reader_rejects_bad_documents(edit, needle):
    _, doc = _doc()
    doc = json.loads(json.dumps(doc))
    edit(doc)
    with pytest.raises(DataError, match=needle):
        reader.validate_document(doc)


def test_falling_fit_is_refused_for_retention():
    t = np.arange(41.0)
    y = models.evaluate("exp", t, dict(p0=1.0, p_inf=0.4, tau=8.0))
    f = engine.fit_model("exp", t, y)
    with pytest.raises(DataError, match="falls"):
        R.build_document(f, [f], tau_cycle_s=1.0, source={})


def test_no_band_when_uncertainties_unknown():
    t = np.arange(41.0)
    y = models.evaluate("exp", t, dict(p0=0.0, p_inf=0.5, tau=8.0))
    f = engine.fit_model("double_exp", t, y, n_starts=4)
    assert not f.uncertainties_ok
    doc = R.build_document(f, [f], tau_cycle_s=1.0, source={})
    assert "band" not in doc and "could not be estimated" in doc["band_note"] or "identifiable" in doc["band_note"]
    with pytest.raises(DataError, match="could not be estimated"):
        R.rf_band(f, 1.0, 8)


@settings(max_examples=60, deadline=None)
@example(name="exp", p0=0.9596873287237495, rise=0.09375, tau=0.9609375, shape=0.5, T=34)   # broke 1e-15
@given(name=st.sampled_from(["exp", "mm", "double_exp", "power"]),
       p0=st.floats(-1.0, 1.0), rise=st.floats(0.01, 10.0), tau=st.floats(0.3, 200.0),
       shape=st.floats(0.1, 0.9), T=st.integers(2, 200))
def test_schedule_invariants_for_any_concave_curve(name, p0, rise, tau, shape, T):
    """RF sums to 1, is positive and falls with t; it exceeds RF_inf and falls as T grows --
    each to the resolution of the tabulated curve: RF comes from differences of p at cycle
    boundaries, each carrying round-off of about eps |p|, so relative to the total rise
    p(T) - p0 the schedule is resolved to ``tol`` (a curve far from zero that rises little,
    e.g. p0 = 0.96, rise 0.09, leaves late increments of 1e-15 that are pure round-off)."""
    params = {"exp": dict(tau=tau), "mm": dict(t_half=tau),
              "double_exp": dict(tau_fast=tau * shape, tau_slow=tau, w=shape),
              "power": dict(tau=tau, alpha=1.0 + 5 * shape)}[name]
    params.update(p0=p0, p_inf=p0 + rise)
    p = R.boundary_curve(name, params, TAU_CYCLE, T + 1)
    tol = 8 * np.finfo(float).eps * np.abs(p).max() / (p[-2] - p[0])
    rf = R.rf(name, params, TAU_CYCLE, T)
    assert rf.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.all(rf >= 0) and np.all(np.diff(rf) <= tol)
    stream = R.rf_inf(name, params, TAU_CYCLE, T)
    assert np.all(rf >= stream - tol)
    assert np.all(R.rf(name, params, TAU_CYCLE, T + 1)[:T] <= rf + tol)
