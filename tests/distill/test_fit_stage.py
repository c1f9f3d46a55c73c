"""The distill stage end to end: run directories, the CLI, the global fit, sensitivity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from astro_rmaat import retention as reader
from astro_rmaat.errors import DataError, RunExistsError
from distill import fitting, global_fit, synthetic
from distill.sensitivity import SensitivityConfig, sensitivity

EXP = dict(p0=0.0, p_inf=0.6, tau=7.0)
FAST = fitting.FitConfig(n_starts=2, band_samples=300)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """3 drive amplitudes x 2 time constants; amplitude scales p_inf only, tau_pl sets tau."""
    d = tmp_path_factory.mktemp("sweep") / "sw"
    return synthetic.write_sweep(
        d, {"drive.amplitude": [0.5, 1.0, 2.0], "astro.tau_pl": [5.0, 10.0]},
        lambda v: ("exp", dict(p0=0.0, p_inf=0.3 * v["drive.amplitude"], tau=1.6 * v["astro.tau_pl"])),
        noise=0.004, seed=3)


def test_fit_writes_a_finished_self_describing_run(tmp_path):
    run = synthetic.write_run(tmp_path / "sim", "exp", EXP, noise=0.01, seed=1, tau_cycle_s=2.0)
    out = fitting.fit(FAST, run, tmp_path / "fit")
    assert {p.name for p in out.iterdir()} == {"config.json", "meta.json", "fit.json",
                                               "retention.json", "fit.png"}
    r = reader.load_retention(out / "retention.json")
    doc = r.document
    assert r.tau_cycle_s == 2.0 and doc["source"]["sha256"] == fitting.runs.sha256_file(run / "samples.parquet")
    assert doc["source"]["simulation_config"]["family"] == "exp"
    assert r.model_name == json.loads((out / "fit.json").read_text())["chosen"] == "exp"
    assert r.params["tau"] == pytest.approx(7.0, rel=0.05)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["versions"]["lmfit"] and meta["files"]["retention.json"]
    assert json.loads((out / "config.json").read_text()) == fitting.cfgmod.to_dict(FAST)
    with pytest.raises(RunExistsError, match="finished run"):
        fitting.fit(FAST, run, out)
    # same config + seed -> same numbers
    out2 = fitting.fit(FAST, run / "samples.parquet", tmp_path / "fit2")
    doc2 = json.loads((out2 / "retention.json").read_text())
    assert doc2["model"]["params"] == doc["model"]["params"] and doc2["band"]["p_lo"] == doc["band"]["p_lo"]


def test_sizes_beyond_memory_are_refused_before_reading_or_writing(tmp_path, monkeypatch):
    """The band's curves (band_samples x (n_cycles + 1) float64) and the figure's factors
    (max plot_T) against the machine's memory: one byte short refuses with no directory made,
    for a curve and for a sweep; exactly enough fits."""
    from astro_rmaat.errors import ConfigError

    path = synthetic.write_samples(tmp_path / "s.parquet", "exp", EXP, noise=0.01)
    band = 8 * FAST.band_samples * (FAST.n_cycles + 1)
    monkeypatch.setattr(fitting.resources, "memory_limit_bytes", lambda: band - 1)
    with pytest.raises(ConfigError, match=r"band_samples = 300, n_cycles = 1024: the band's 300 curves of 1,025"):
        fitting.fit(FAST, path, tmp_path / "a")
    with pytest.raises(ConfigError, match="the band's 300 curves"):
        fitting.fit_sweep(FAST, tmp_path / "no-sweep-read", tmp_path / "a")
    big_T = fitting.FitConfig(n_starts=2, band_samples=300, plot_T=(4, band // 8 + 1))
    monkeypatch.setattr(fitting.resources, "memory_limit_bytes", lambda: band)
    with pytest.raises(ConfigError, match=rf"plot_T = \[4, {band // 8 + 1}\]"):
        fitting.fit(big_T, path, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    fitting.check_memory(FAST)


def test_fit_one_element_and_missing_things(tmp_path):
    path = synthetic.write_samples(tmp_path / "s.parquet", "exp", EXP, noise=0.01, n_elements=2)
    out = fitting.fit(fitting.FitConfig(n_starts=1, element=1, models=("exp",)), path, tmp_path / "a")
    assert reader.load_retention(out / "retention.json").model_name == "exp"
    with pytest.raises(DataError, match="element 5 of 'p_l' is not in the traces"):
        fitting.fit(fitting.FitConfig(element=5), path, tmp_path / "b")
    with pytest.raises(DataError, match="variable 'rho' is not in the traces; available: p_l"):
        fitting.fit(fitting.FitConfig(variable="rho"), path, tmp_path / "c")
    with pytest.raises(DataError, match="does not exist"):
        fitting.fit(FAST, tmp_path / "nothing.parquet", tmp_path / "d")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither samples.parquet"):
        fitting.fit(FAST, tmp_path / "empty", tmp_path / "e")
    few = synthetic.write_samples(tmp_path / "few.parquet", "exp", EXP, n_cycles=4)
    with pytest.raises(DataError, match="5 points for model 'hill' with 4 fitted parameters; expected at least 6"):
        fitting.fit(fitting.FitConfig(models=("exp", "hill")), few, tmp_path / "f")


def test_global_fit_recovers_the_shared_time_constant():
    rng = np.random.default_rng(0)
    t = np.arange(41.0)
    amps = [0.2, 0.5, 1.0, 1.7]
    curves = [(t, a * (1 - np.exp(-t / 9.0)) + rng.normal(0, 0.004, t.size)) for a in amps]
    gf = global_fit.global_fit("exp", curves, [f"p{i}" for i in range(4)], n_starts=2)
    tau, se = gf.values["tau"], gf.stderr["tau"]
    print(f"\nshared tau = {tau:.4f} ± {se:.4f} s (true 9)")
    assert abs(tau - 9.0) < 3 * se and gf.uncertainties_ok
    for i, a in enumerate(amps):
        assert gf.point_values(f"p{i}")["p_inf"] == pytest.approx(a, rel=0.03)
    # the shared fit is no worse than four separate fits once its fewer parameters count
    assert gf.comparison["shared_supported"] and gf.comparison["f_p"] > 0.01
    # pooled information: the shared tau is tighter than any single point's
    assert se < min(f.stderr["tau"] for f in gf.independent)
    # and when the time constants truly differ, the shared hypothesis is rejected
    curves[0] = (t, 0.2 * (1 - np.exp(-t / 3.0)) + rng.normal(0, 0.004, t.size))
    bad = global_fit.global_fit("exp", curves, [f"p{i}" for i in range(4)], n_starts=2)
    assert not bad.comparison["shared_supported"] and bad.comparison["f_p"] < 1e-6


def test_global_fit_takes_the_per_point_fits_it_is_given():
    """fit_sweep fits each candidate once per point and hands the chosen one's fits on: the
    global fit from them equals the one that fits the points itself; fits of another model,
    or too few of them, are refused."""
    rng = np.random.default_rng(1)
    t = np.arange(31.0)
    curves = [(t, a * (1 - np.exp(-t / 6.0)) + rng.normal(0, 0.004, t.size)) for a in (0.3, 0.9, 1.4)]
    ids = ["a", "b", "c"]
    own = global_fit.global_fit("exp", curves, ids, n_starts=2)
    given = [fitting.engine.fit_model("exp", t, y, n_starts=2, with_report=False) for t, y in curves]
    handed = global_fit.global_fit("exp", curves, ids, n_starts=2, independent=given)
    assert handed.values == own.values and handed.comparison == own.comparison
    hill = [fitting.engine.fit_model("hill", t, y, n_starts=2, with_report=False) for t, y in curves]
    with pytest.raises(fitting.ConfigError, match="one fit of 'exp' per curve"):
        global_fit.global_fit("exp", curves, ids, n_starts=2, independent=hill)
    with pytest.raises(fitting.ConfigError, match=r"per curve \(3\)"):
        global_fit.global_fit("exp", curves, ids, n_starts=2, independent=given[:2])


def test_fit_on_a_sweep_dir_runs_the_global_fit(sweep_dir, tmp_path):
    cfg = fitting.FitConfig(n_starts=2, models=("exp", "hill"), band_samples=200,
                            group_by="astro.tau_pl")
    out = fitting.fit(cfg, sweep_dir, tmp_path / "g")
    doc = json.loads((out / "fit.json").read_text())
    assert doc["schema"] == "rmaat.global_fit/v1" and doc["chosen"] == "exp"
    assert set(doc["grid"]) == {f"p{i:04d}" for i in range(6)}
    c = doc["global"]["comparison_with_independent_fits"]
    assert not c["shared_supported"]          # tau differs with astro.tau_pl: rejected
    groups = {g["value"]: g for g in doc["groups"]}  # ... but shared within each tau_pl
    assert set(groups) == {5.0, 10.0} and all(g["comparison_with_independent_fits"]["shared_supported"]
                                             for g in groups.values())
    assert groups[5.0]["shared_params"]["tau"]["value"] == pytest.approx(8.0, rel=0.02)
    with pytest.raises(fitting.ConfigError, match="group_by = 'nope'"):
        fitting.fit(fitting.FitConfig(group_by="nope"), sweep_dir, tmp_path / "h")
    assert not (tmp_path / "h").exists()
    r = reader.load_retention(out / "retention.json")
    assert r.document["global_fit"]["shared"] == ["tau"]
    assert r.document["source"]["reference_point"] == "p0000"


def test_sensitivity_recovers_known_elasticities(sweep_dir, tmp_path):
    out = sensitivity(SensitivityConfig(fit=fitting.FitConfig(n_starts=2), model="exp",
                                        metric_samples=100), sweep_dir, tmp_path / "s")
    el = pd.read_csv(out / "elasticity.csv").set_index(["output", "key"])
    table = pd.read_csv(out / "sensitivity.csv")
    print("\n" + el.round(3).to_string())
    assert len(table) == 6 and {"tau", "tau_stderr", "rf_first_16", "rf_first_16_sd"} <= set(table.columns)
    # tau = 1.6 tau_pl: elasticity 1 on tau_pl, 0 on the amplitude; p_inf ∝ amplitude
    assert el.loc[("tau", "astro.tau_pl"), "slope"] == pytest.approx(1.0, abs=0.08)
    assert abs(el.loc[("tau", "drive.amplitude"), "slope"]) < 0.05
    assert el.loc[("p_inf", "drive.amplitude"), "slope"] == pytest.approx(1.0, abs=0.03)
    # a slower trace spreads the memory: RF(1, 16) falls with tau_pl
    assert el.loc[("rf_first_16", "astro.tau_pl"), "slope"] < -0.2
    assert (out / "sensitivity.png").stat().st_size > 10_000


def test_cli_fit_and_sensitivity(run_cli, tmp_path, sweep_dir):
    run = synthetic.write_run(tmp_path / "sim", "hill", dict(p0=0.0, p_inf=0.6, t_half=10.0, n=2.0),
                              noise=0.01)
    proc = run_cli("fit", run, "--out", tmp_path / "f", "--models", "exp,hill,power",
                   "--seed", "3", "--n-starts", "2")
    assert proc.returncode == 0, proc.stderr
    assert "chosen model (AICC): hill" in proc.stdout and "[[Variables]]" in proc.stdout
    assert "RF(t, 8)" in proc.stdout
    assert json.loads((tmp_path / "f" / "config.json").read_text())["seed"] == 3
    proc = run_cli("fit", run, "--out", tmp_path / "f")
    assert proc.returncode == 2 and "already holds a finished run" in proc.stderr
    proc = run_cli("fit", run, "--out", tmp_path / "g", "--models", "exp,cubic")
    assert proc.returncode == 2 and "'cubic' is unknown" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("sensitivity", sweep_dir, "--out", tmp_path / "s", "--model", "exp",
                   "--set", "fit.n_starts=1", "--set", "metric_samples=50")
    assert proc.returncode == 0, proc.stderr
    assert "astro.tau_pl" in proc.stdout and "elasticity" in proc.stdout


def test_import_distill_is_light():
    import subprocess
    import sys
    code = "import sys, distill, distill.cli; print(any(m in sys.modules for m in ('lmfit', 'scipy', 'brian2', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_falling_trace_is_refused_before_the_run_directory(tmp_path):
    """Every macro model is a saturating rise: a falling trace gives no schedule, so it is
    refused before config.json or fit.json exist (the corrected rerun then just works)."""
    path = synthetic.write_samples(tmp_path / "s.parquet", "exp", dict(p0=1.0, p_inf=0.4, tau=8.0),
                                   noise=0.005)
    with pytest.raises(DataError, match="the trace falls"):
        fitting.fit(fitting.FitConfig(models=("exp",), n_starts=1), path, tmp_path / "f")
    assert not (tmp_path / "f").exists()


def test_fit_a_continuous_traces_file_by_variable_name(tmp_path):
    """A traces.parquet sampled every 0.1 s with two variables: fit the one named."""
    from astro_rmaat.traces import write_traces
    t = np.arange(0, 30.0001, 0.1)
    rng = np.random.default_rng(2)
    df = pd.concat([
        pd.DataFrame({"t_s": t, "variable": "rho", "element": 0, "unit": "1",
                      "value": 0.5 * (1 - np.exp(-t / 6.0)) + rng.normal(0, 0.003, t.size)}),
        pd.DataFrame({"t_s": t, "variable": "C", "element": 0, "unit": "uM",
                      "value": 0.1 + 0.05 * np.sin(t)})])
    path = tmp_path / "traces.parquet"
    write_traces(df, path, {"model": "synthetic:exp", "tau_cycle_s": 1.0, "sampling": "continuous"})
    out = fitting.fit(fitting.FitConfig(variable="rho", models=("exp", "mm"), n_starts=2,
                                        band_samples=200), path, tmp_path / "fit")
    r = reader.load_retention(out / "retention.json")
    assert r.model_name == "exp" and r.params["tau"] == pytest.approx(6.0, rel=0.02)
    assert r.document["source"]["variable"] == "rho"
