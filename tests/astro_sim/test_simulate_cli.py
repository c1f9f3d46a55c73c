"""simulate(cfg, out_dir) and ``rmaat simulate``: files, metadata, refusals, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from astro_rmaat import config as cfgmod
from astro_rmaat.errors import ConfigError, RunExistsError
from astro_rmaat.traces import read_traces
from astro_sim.network.model import NetworkSimConfig
from astro_sim.simulate import load_sim_config, simulate

SHORT = ["protocol.n_cycles=3"]


def snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_simulate_writes_a_self_describing_run(tmp_path):
    cfg = load_sim_config(overrides=SHORT)
    out = simulate(cfg, tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "meta.json", "samples.parquet",
                                                     "traces.parquet"]
    config = json.loads((out / "config.json").read_text())
    assert cfgmod.from_dict(NetworkSimConfig, config) == cfg
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == cfg.seed and meta["brian2_target"] == "cython" and meta["wall_time_s"] > 0
    assert meta["versions"]["brian2"].startswith("2.9")
    tr = read_traces(out / "traces.parquet")
    assert set(tr["variable"]) == {"x", "s", "p_s", "p_l"} and set(tr["unit"]) == {"1"}
    assert tr.attrs["model"] == "rmaat_network" and tr.attrs["sampling"] == "continuous"
    sm = read_traces(out / "samples.parquet")
    assert sm.attrs["sampling"] == "cycle_boundaries" and sm.attrs["slow_variable"] == "p_l"
    assert sm.attrs["tau_cycle_s"] == 1.0 and sm.attrs["n_cycles"] == 3
    assert sm.attrs["param_set"] == "rmaat-network/v1" and sm.attrs["config"] == config
    assert sorted(sm["t_s"].unique()) == [0.0, 1.0, 2.0, 3.0]
    assert sm.groupby("element").size().tolist() == [4] * 9
    # a finished run is never overwritten, and the refusal leaves it byte for byte intact
    before = snapshot(out)
    with pytest.raises(RunExistsError, match="finished run"):
        simulate(cfg, out)
    assert snapshot(out) == before


def test_sizes_beyond_memory_are_refused_before_the_run(tmp_path, monkeypatch):
    """The counts behind the memory checks are the run's own (a short run writes exactly
    samples x recorded values trace rows), and one byte short of either bound refuses with no
    directory made; exactly enough passes."""
    from astro_rmaat import resources
    from astro_sim import simulate as sim

    cfg = load_sim_config(overrides=["protocol.n_cycles=2", "record_interval_ms=100"])
    n_syn = cfg.geometry.n_synapses                        # 9
    coupling = 16 * n_syn * (n_syn - 1)                    # two int64 indices per coupled pair
    n_samples, per_sample = 21, cfg.geometry.n_neurons + 3 * n_syn   # x of 6 neurons; s, p_s, p_l of 9 synapses
    traces = n_samples * per_sample * sim.TRACE_BYTES_PER_VALUE
    assert traces > coupling
    monkeypatch.setattr(resources, "memory_limit_bytes", lambda: coupling - 1)
    with pytest.raises(ConfigError, match=r"geometry.n_pre = 3, geometry.n_post = 3: 9 synapses coupled in 72 pairs"):
        simulate(cfg, tmp_path / "a")
    monkeypatch.setattr(resources, "memory_limit_bytes", lambda: traces - 1)
    with pytest.raises(ConfigError, match=r"record_interval_ms = 100.0 over 2 s: 21 samples of 33 recorded values"):
        simulate(cfg, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    monkeypatch.setattr(resources, "memory_limit_bytes", lambda: traces)
    out = simulate(cfg, tmp_path / "a")
    assert len(read_traces(out / "traces.parquet")) == n_samples * per_sample


def test_simulate_lets_go_of_each_table_before_it_is_converted_for_writing(tmp_path, monkeypatch):
    """simulate hands each long table to write_traces and keeps no reference of its own, so the
    family's frame is freed once its canonical copy exists, before the Arrow table and the
    Parquet writer take their memory (what TRACE_BYTES_PER_VALUE counts at the peak)."""
    import gc
    import weakref

    from astro_rmaat import traces
    from astro_sim import simulate as sim

    frames, alive = [], []
    real_run, real_validate = sim.run, traces.validate

    def run(cfg):
        out = real_run(cfg)
        frames.extend([weakref.ref(out.traces), weakref.ref(out.samples)])
        return out

    def validate(table, where="traces"):   # write_traces: after the copy, before the Arrow table
        gc.collect()
        alive.append([ref() is not None for ref in frames])
        real_validate(table, where)

    monkeypatch.setattr(sim, "run", run)
    monkeypatch.setattr(traces, "validate", validate)
    simulate(load_sim_config(overrides=SHORT), tmp_path / "run")
    assert alive == [[False, True], [False, False]]   # traces freed before its write, samples before its own


def test_a_run_that_stops_early_is_never_written_as_finished(tmp_path, monkeypatch):
    """A Brian2 run that returns before its end (as Brian2's Ctrl-C handler makes it, had the run
    not switched that handler off) raises; the directory holds no finished run."""
    import brian2

    from astro_rmaat import runs

    cfg = load_sim_config(overrides=["protocol.n_cycles=2", "record_interval_ms=100"])
    run = brian2.Network.run
    monkeypatch.setattr(brian2.Network, "run", lambda self, duration, **kw: run(self, duration / 2, **kw))
    with pytest.raises(RuntimeError, match=r"last sample is at t = 0.9 s of a 2 s run \(10 of 20 samples\)"):
        simulate(cfg, tmp_path / "a")
    assert not runs.is_finished(tmp_path / "a")
    assert brian2.prefs.core.stop_on_keyboard_interrupt is False   # Ctrl-C raises KeyboardInterrupt


def test_a_tripartite_run_whose_end_is_off_the_recording_grid_is_complete():
    """The network runs one recording step past the end: with a tail of 13 ms the run of
    313 ms records 0, 50, ..., 350 ms, 8 times, and that is a complete run."""
    from astro_sim.simulate import run
    from astro_sim.tripartite.run import recorded_samples

    cfg = load_sim_config(None, ["target=\"numpy\"", "record_dt_ms=50", "protocol.kind=\"explicit\"",
                                 "protocol.pre_times_s=[0.05, 0.1]", "protocol.explicit_duration_s=0.3",
                                 "protocol.tail_s=0.013"], model="tripartite")
    out = run(cfg)
    assert out.traces["t_s"].nunique() == recorded_samples(0.313, 0.05) == 8


def test_tripartite_sizes_beyond_memory_are_refused(monkeypatch):
    from astro_rmaat import resources
    from astro_sim import simulate as sim
    from astro_sim.tripartite.model import TripartiteSimConfig

    cfg = TripartiteSimConfig(n_units=4, max_spikes=99)
    tables = 8 * 2 * 100 * 4
    monkeypatch.setattr(resources, "memory_limit_bytes", lambda: tables - 1)
    with pytest.raises(ConfigError, match="n_units = 4, max_spikes = 99: spike tables of 800 times"):
        sim.validate(cfg)
    monkeypatch.setattr(resources, "memory_limit_bytes", lambda: 10**15)
    sim.validate(cfg)
    small = TripartiteSimConfig(n_units=4, max_spikes=99, record_dt_ms=1.0)
    monkeypatch.setattr(resources, "memory_limit_bytes", lambda: tables)   # enough for the tables, not the traces
    with pytest.raises(ConfigError, match=r"record_dt_ms = 1.0, n_units = 4 over .* s: .* samples of "
                                          rf"{4 * len(small.record)} recorded values"):
        sim.validate(small)


@pytest.mark.parametrize("override, needle", [
    ("params.tau_nn_ms=3", "unknown parameter 'params.tau_nn_ms'"),
    ("params.tau_n_ms=\"fast\"", "params.tau_n_ms = 'fast': expected a number"),
    ("protocol.n_cycles=2.5", "protocol.n_cycles = 2.5: expected an integer"),
    ("params.tau_ps_ms=0", "params.tau_ps_ms = 0.0: expected a finite positive number ms"),
    ("params.tau_pl_s=-10", "params.tau_pl_s = -10.0: expected a finite positive number s"),
    ("params.gamma_s=-1", "params.gamma_s = -1.0"),
    ("record_interval_ms=1500", "record_interval_ms = 1500.0: expected at most the cycle length"),
    ("protocol.n_cycles=0", "protocol.n_cycles = 0: expected an integer >= 1"),
    ("record=[\"x\",\"ca\"]", "unknown variable 'ca'"),
    ("protocol.driven=[0,9]", "neuron 9 does not exist"),
    ("dt_ms=0.3", "not a whole number of time steps"),
    ("target=\"gpu\"", "target = 'gpu': expected one of"),
])
def test_bad_input_is_one_clear_error(override, needle):
    with pytest.raises(ConfigError) as exc:
        load_sim_config(overrides=[override])
    assert needle in str(exc.value), str(exc.value)


def test_config_file_with_unknown_key(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"model": "rmaat_network", "params": {"tau_n_ms": 5, "kappa": 1}}))
    with pytest.raises(ConfigError, match="params.kappa"):
        load_sim_config(p)
    p.write_text(json.dumps({"model": "rmaat_network", "params": {"tau_n_ms": 5}}))
    assert load_sim_config(p).params.tau_n_ms == 5.0


def test_cli_runs_refuses_and_reports_bad_input(run_cli, tmp_path):
    out = tmp_path / "run"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps({"model": "rmaat_network", "protocol": {"n_cycles": 2}}))
    ok = run_cli("simulate", "--config", cfg_file, "--out", out, "--set", "record=[\"p_l\"]")
    assert ok.returncode == 0, ok.stderr
    tr = read_traces(out / "traces.parquet")
    assert set(tr["variable"]) == {"p_l"} and tr["t_s"].max() == 2.0
    before = snapshot(out)
    again = run_cli("simulate", "--config", cfg_file, "--out", out)
    assert again.returncode == 2 and "already holds a finished run" in again.stderr
    assert "Traceback" not in again.stderr and snapshot(out) == before

    bad_out = tmp_path / "bad"
    bad = run_cli("simulate", "--out", bad_out, "--set", "protocol.n_cycles=0")
    assert bad.returncode == 2 and "protocol.n_cycles = 0" in bad.stderr
    assert "Traceback" not in bad.stderr and not bad_out.exists()   # nothing half-written


def test_cli_show_defaults_is_the_full_config(run_cli):
    proc = run_cli("simulate", "--show-defaults", "--set", "protocol.amplitude=0.5")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown == cfgmod.to_dict(load_sim_config(overrides=["protocol.amplitude=0.5"]))
    assert shown["model"] == "rmaat_network" and shown["params"]["tau_pl_s"] == 10.0
    assert np.isclose(shown["protocol"]["amplitude"], 0.5)
