"""Known answers from real simulations: the shipped default schedule and Graupner–Brunel pairing."""

from __future__ import annotations

import importlib.util
import json

import pytest

from astro_rmaat.retention import default_retention_path, load_retention
from distill import fitting

#: Graupner & Brunel 2012, 60 pre-post pairs at 1 Hz, sigma = 0, DP parameters
#: (docs/known_answers.md): rho rises from 0 towards rho_bar with tau_eff.
GB_TABLE = {-20: (0.436, 21.0), 0: (0.502, 13.5), 10: (0.555, 14.3), 20: (0.543, 17.1)}


@pytest.mark.slow
def test_shipped_default_retention_regenerates(repo_root, tmp_path):
    """Simulate the default RMAAT network, refit, and match astro_rmaat/data/retention/default.json."""
    spec = importlib.util.spec_from_file_location("make_default_retention",
                                                  repo_root / "scripts" / "make_default_retention.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    shipped = repo_root / "astro_rmaat" / "data" / "retention"
    assert default_retention_path() == shipped / "default.json"
    r = load_retention(shipped / "default.json")
    assert r.max_segments >= 1024 and r.rf(16).sum() == pytest.approx(1.0)
    assert r.document["source"]["traces"] == "astro_rmaat/data/retention/default_samples.parquet"
    assert r.document["source"]["sha256"] == fitting.runs.sha256_file(shipped / "default_samples.parquet")
    sim = r.document["source"]["simulation_config"]
    assert sim["model"] == "rmaat_network"
    # p_l integrates a cycle-periodic drive: at cycle boundaries it is exactly exponential
    # with tau = tau_pl / gamma_l, and that is the model AICc picks
    assert r.model_name == "exp"
    assert r.params["tau"] == pytest.approx(sim["params"]["tau_pl_s"] / sim["params"]["gamma_l"], rel=1e-4)
    mod.generate(tmp_path / "fresh", tmp_path)
    problems = mod.compare(shipped, tmp_path / "fresh")
    assert not problems, problems
    print(f"\nshipped default: {r.model_name} {r.params}; regenerated within rtol {mod.PARAM_RTOL}")


@pytest.mark.slow
@pytest.mark.parametrize("dt_pair", [-20])
def test_graupner_brunel_pairing_fits_exponential_with_reference_rho_bar_and_tau(dt_pair, tmp_path):
    from astro_sim.simulate import simulate
    from astro_sim.tripartite.model import TripartiteSimConfig
    from astro_sim.tripartite.params import TripartiteParams
    from astro_sim.tripartite.protocols import SpikeProtocolConfig

    rho_bar, tau_eff = GB_TABLE[dt_pair]
    # plain Graupner–Brunel (release_scaling 0: every presynaptic spike adds C_pre), from rho = 0
    cfg = TripartiteSimConfig(n_units=1, rho_init=(0.0,), record_dt_ms=1000.0,
                              params=TripartiteParams(release_scaling=0.0),
                              protocol=SpikeProtocolConfig(kind="pairing", n_pairs=60, pair_rate_hz=1.0,
                                                           pair_delay_ms=float(dt_pair)),
                              record=("rho",))
    run = simulate(cfg, tmp_path / "sim")
    out = fitting.fit(fitting.FitConfig(n_starts=4, band_samples=200), run, tmp_path / "fit")
    doc = json.loads((out / "fit.json").read_text())
    assert doc["source"]["variable"] == "rho" and doc["tau_cycle_s"] == 1.0
    exp = next(c for c in doc["candidates"] if c["name"] == "exp")
    p_inf, tau = exp["params"]["p_inf"]["value"], exp["params"]["tau"]["value"]
    print(f"\nGB pairing dt = {dt_pair} ms: exp fit rho_inf = {p_inf:.4f} (table {rho_bar}), "
          f"tau = {tau:.2f} s (table {tau_eff}); R^2 = {exp['r2']:.6f}; chosen {doc['chosen']}")
    assert p_inf == pytest.approx(rho_bar, abs=0.015)
    assert tau == pytest.approx(tau_eff, rel=0.05)
    assert abs(exp["params"]["p0"]["value"]) < 0.01 and exp["r2"] > 0.9999
    load_retention(out / "retention.json")
