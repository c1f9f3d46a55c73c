"""cpp_standalone: one build serves a run_args sweep, equals runtime targets; stochastic stats.

The module shares ONE standalone build (a fresh cache directory per test session): the
sweep fixture builds it, every later test must find it (BUILD_COUNT does not move).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from astro_rmaat.config import from_dict
from astro_rmaat.traces import read_traces
from astro_rmaat.workers import descendants
from astro_sim.sweep import SweepConfig, sweep
from astro_sim.tripartite import standalone as sa
from astro_sim.tripartite.model import TripartiteSimConfig
from astro_sim.tripartite.run import run
from process_probes import working_in

pytestmark = [pytest.mark.standalone, pytest.mark.slow]

# 10 s, 2 units, astrocyte active: two 20 Hz trains, release-increasing gliotransmission.
BASE = {"model": "tripartite", "n_units": 2, "rho_init": [0.1, 0.8],
        "params": {"alpha": 0.9, "O_beta": 3.0},
        "protocol": {"kind": "trains", "n_trains": 2, "inter_train_s": 5.0}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("standalone_cache")


@pytest.fixture(scope="module")
def standalone_sweep(cache, tmp_path_factory):
    base = {**BASE, "standalone_dir": str(cache)}
    cfg = SweepConfig(base=base, grid={"params.alpha": [0.0, 0.3, 0.9],
                                       "protocol.train_rate_hz": [20.0, 40.0]}, seed=5,
                      standalone=True)
    before = sa.BUILD_COUNT
    out = sweep(cfg, tmp_path_factory.mktemp("sweep") / "sw", progress=False)
    return out, sa.BUILD_COUNT - before


def test_run_args_sweep_builds_once_and_equals_separate_runs(standalone_sweep):
    out, builds = standalone_sweep
    meta = json.loads((out / "meta.json").read_text())
    assert builds == 1 and meta["standalone_builds"] == 1 and meta["n_points"] == 6
    assert len(list(p for p in (out.parent / "sw").rglob("manifest.json") )) >= 1
    design = pd.read_parquet(out / "design.parquet")
    finals = []
    for pid in design.point_id:
        pdir = out / "points" / pid
        pcfg = from_dict(TripartiteSimConfig, json.loads((pdir / "config.json").read_text()))
        assert pcfg.target == "cpp_standalone"
        tr = read_traces(pdir / "traces.parquet")
        assert tr.attrs["target"] == "cpp_standalone"
        if pid in ("p0000", "p0003", "p0005"):   # separate runs on the Cython runtime
            ref = run(from_dict(TripartiteSimConfig, {**json.loads((pdir / "config.json").read_text()),
                                                      "target": "cython"})).traces
            assert np.array_equal(ref[["t_s", "element"]].to_numpy(), tr[["t_s", "element"]].to_numpy())
            np.testing.assert_allclose(tr.value.to_numpy(), ref.value.to_numpy(), rtol=1e-9, atol=1e-12)
        finals.append(tr[tr.variable == "Gamma_S"].value.max())
    assert len(set(np.round(finals, 9))) > 1          # the run_args really changed the runs


def test_deterministic_run_agrees_across_numpy_cython_standalone(standalone_sweep, cache):
    cfg = from_dict(TripartiteSimConfig, {**BASE, "standalone_dir": str(cache)})
    before = sa.BUILD_COUNT
    outs = {t: run(from_dict(TripartiteSimConfig, {**BASE, "standalone_dir": str(cache), "target": t}))
            for t in ("cpp_standalone", "cython", "numpy")}
    assert sa.BUILD_COUNT == before                   # the sweep's build was reused
    ref = outs["cpp_standalone"].traces
    assert ref[ref.variable == "n_glio"].value.max() >= 1        # the astrocyte released
    assert cfg.protocol.kind == "trains"
    for t in ("cython", "numpy"):
        other = outs[t].traces
        assert np.array_equal(ref[["t_s", "element"]].to_numpy(), other[["t_s", "element"]].to_numpy())
        np.testing.assert_allclose(other.value.to_numpy(), ref.value.to_numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(outs[t].samples.value, outs["cpp_standalone"].samples.value,
                                   rtol=1e-9, atol=1e-12)


def test_poisson_runs_agree_statistically_across_targets_and_seeds(standalone_sweep, cache):
    """Poisson input: standalone and Cython on *different* seeds give the same statistics."""
    def stats(target, seeds):
        vals = []
        for seed in seeds:
            cfg = from_dict(TripartiteSimConfig, {
                **BASE, "standalone_dir": str(cache), "target": target, "seed": seed,
                "protocol": {"kind": "poisson_steps", "rates_hz": [20.0, 5.0], "step_s": 5.0}})
            tr = run(cfg).traces
            for e in (0, 1):
                y = tr[(tr.variable == "Y_S") & (tr.element == e)].value.to_numpy()
                C = tr[(tr.variable == "C") & (tr.element == e)].value.to_numpy()
                vals.append((y.mean(), C.mean()))
        return np.array(vals)

    before = sa.BUILD_COUNT
    a = stats("cpp_standalone", range(100, 106))
    b = stats("cython", range(200, 203))
    assert sa.BUILD_COUNT == before
    assert np.std(a[:, 0]) > 0 and np.std(a[:, 1]) > 0            # seeds give different runs
    for col in (0, 1):
        se = np.sqrt(a[:, col].var(ddof=1) / len(a) + b[:, col].var(ddof=1) / len(b))
        assert abs(a[:, col].mean() - b[:, col].mean()) < 4 * se
    # same seed -> the same Poisson spikes on every target (drawn in NumPy), same numbers
    same = [run(from_dict(TripartiteSimConfig, {
        **BASE, "standalone_dir": str(cache), "target": t, "seed": 100,
        "protocol": {"kind": "poisson_steps", "rates_hz": [20.0, 5.0], "step_s": 5.0}})).traces
        for t in ("cpp_standalone", "cython")]
    np.testing.assert_allclose(same[0].value.to_numpy(), same[1].value.to_numpy(), rtol=1e-9, atol=1e-12)


def test_release_increasing_gliotransmission_potentiates_more(standalone_sweep, cache):
    """De Pittà & Brunel 2016: with C_pre scaled by r_S/U_0*, gliotransmission that raises
    release (alpha > U_0*) drives rho higher under pairing than release-decreasing (alpha = 0)."""
    def final_rho(alpha):
        cfg = from_dict(TripartiteSimConfig, {
            **BASE, "standalone_dir": str(cache), "target": "cpp_standalone", "rho_init": [0.5],
            # O_beta 3 uM/s: at 0.5 uM/s ten pairs leave the resting astrocyte below C_Theta
            "params": {"alpha": alpha, "O_beta": 3.0},
            "protocol": {"kind": "pairing", "n_pairs": 10, "pair_delay_ms": 10.0}})
        out = run(cfg)
        tr = out.traces
        assert tr[tr.variable == "n_glio"].value.max() >= 1      # the astrocyte did release
        s = out.samples
        return s[s.t_s == s.t_s.max()].value.to_numpy()

    before = sa.BUILD_COUNT
    up, down = final_rho(0.9), final_rho(0.0)
    assert sa.BUILD_COUNT == before
    assert np.all(up - down > 0.01), (up, down)


def test_a_build_ends_with_the_process_that_asked_for_it(tmp_path):
    """A sweep killed while its cpp_standalone build compiles leaves no build running on (into a
    directory the next invocation removes and builds again): killed once the compiler runs, no
    process working in the build directory (the build's child, make, the compilers, also those
    make started after the kill or whose make died first) is left a few seconds later."""
    repo = Path(__file__).resolve().parents[2]
    build = tmp_path / "build"
    code = ("import json, sys; from pathlib import Path; from astro_rmaat.config import from_dict; "
            "from astro_sim.tripartite import standalone as sa; "
            "from astro_sim.tripartite.model import TripartiteSimConfig; "
            "sa.build(from_dict(TripartiteSimConfig, {**json.loads(sys.argv[2]), 'target': 'cpp_standalone'}), "
            "Path(sys.argv[1]))")
    asker = subprocess.Popen([sys.executable, "-c", code, str(build), json.dumps(BASE)],
                             env=dict(os.environ, PYTHONPATH=str(repo)), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not any(_name(p) in ("make", "g++", "cc1plus", "c++") for p in descendants(asker.pid)):
            assert asker.poll() is None and time.monotonic() < deadline, "the build never reached its compiler"
            time.sleep(0.1)
        # the watch looks every 0.5 s. The window leaves room for a stalled machine (3 s once ran out
        # in a full clean-clone run, with nothing ended) and stays well inside the ~11 s that make
        # compiles for here (2 cores, idle); a build run to its end writes the manifest checked below
        left = _kill_then_left(asker, build, wait_s=6.0)
        assert not left, f"still working in the build directory after the kill: {left}"
        assert not (build / sa.MANIFEST).is_file()
    finally:
        if asker.poll() is None:
            asker.kill()


def _kill_then_left(proc, folder, wait_s: float = 3.0) -> list[int]:
    """SIGKILL ``proc`` alone, then give what it started ``wait_s`` seconds to end: the processes
    still working in ``folder`` after that (``working_in``), which are then killed here."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + wait_s
    while working_in(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = working_in(folder)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def _name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:      # ended meanwhile
        return ""




def test_the_binary_is_tied_to_the_thread_that_runs_it(standalone_sweep, cache, monkeypatch):
    """Each run of the compiled binary is started with ``die_with_parent``'s preexec_fn, so a
    Dask worker ended under it (os._exit when the sweep is killed) takes the binary with it
    (the mechanism: tests/astro_rmaat/test_workers.py)."""
    armed = []

    def spy():
        def arm():
            pass
        armed.append(arm)
        return arm
    monkeypatch.setattr(sa, "die_with_parent", spy)
    started = []
    real_run = sa.subprocess.run

    def run_spy(argv, **kw):
        started.append(kw.get("preexec_fn"))
        return real_run(argv, **kw)
    monkeypatch.setattr(sa.subprocess, "run", run_spy)
    cfg = from_dict(TripartiteSimConfig, {**BASE, "target": "cpp_standalone", "standalone_dir": str(cache)})
    builds = sa.BUILD_COUNT
    run(cfg)
    assert sa.BUILD_COUNT == builds, "the sweep's build did not fit: the spy saw the build's own start"
    assert len(armed) == 1 and started == armed


def test_a_killed_dask_sweep_leaves_no_binary_running(tmp_path):
    """``rmaat sweep --executor dask --standalone`` killed (SIGKILL) while its workers run the
    compiled binary: Dask's workers leave at once, and their binaries with them (before
    die_with_parent they ran on to the end of their point)."""
    repo = Path(__file__).resolve().parents[2]
    base = tmp_path / "base.json"   # each point's binary runs for seconds: 2 units, 3000 s of model time
    base.write_text(json.dumps({"model": "tripartite", "n_units": 2, "record_dt_ms": 50.0, "record": ["rho"],
                                "protocol": {"kind": "explicit", "pre_times_s": [0.05, 0.1],
                                             "explicit_duration_s": 3000.0}}))
    out = tmp_path / "sw"
    sweep_proc = subprocess.Popen(
        [sys.executable, "-m", "rmaat_app", "sweep", "--config", str(base), "--grid",
         "params.U_0_star=0.1,0.2,0.3,0.4,0.5,0.6", "--executor", "dask", "--workers", "2", "--standalone",
         "--quiet", "--out", str(out)],
        env=dict(os.environ, PYTHONPATH=str(repo)), cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not [p for p in descendants(sweep_proc.pid) if _name(p) == "main"]:
            assert sweep_proc.poll() is None and time.monotonic() < deadline, "no point's binary started"
            time.sleep(0.2)
        left = _kill_then_left(sweep_proc, out)
        assert not left, f"still running after the sweep was killed: {left}"
    finally:
        if sweep_proc.poll() is None:
            sweep_proc.kill()
