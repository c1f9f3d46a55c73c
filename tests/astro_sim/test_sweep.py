"""Sweeps: output layout, seeds, resume, Dask == serial, and bad input that writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from astro_rmaat.errors import ConfigError, RunExistsError
from astro_rmaat.traces import read_traces
from astro_sim.sweep import SweepConfig, load_sweep_config, point_seed, sweep

# A tiny deterministic point: 0.3 s of 20 Hz input (numpy target: no compilation at all).
TINY = {"model": "tripartite", "target": "numpy", "record_dt_ms": 50.0,
        "record": ["u_S", "x_S", "Gamma_S", "C", "rho"],
        "protocol": {"kind": "explicit", "pre_times_s": [0.05, 0.1, 0.15, 0.2],
                     "explicit_duration_s": 0.3}}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_design_seeds_and_resume(tmp_path):
    cfg = SweepConfig(base=TINY, grid={"params.U_0_star": [0.3, 0.6]}, seed=7)
    out = sweep(cfg, tmp_path / "sw", progress=False)
    assert json.loads((out / "config.json").read_text())["grid"] == {"params.U_0_star": [0.3, 0.6]}
    design = pd.read_parquet(out / "design.parquet")
    assert list(design.columns) == ["point_id", "params.U_0_star", "seed"]
    assert list(design.point_id) == ["p0000", "p0001"]
    assert list(design.seed) == [point_seed(7, 0), point_seed(7, 1)]
    assert point_seed(7, 0) != point_seed(7, 1) and point_seed(7, 0) == point_seed(7, 0)
    for pid, u0 in zip(design.point_id, design["params.U_0_star"]):
        pdir = out / "points" / pid
        assert {p.name for p in pdir.iterdir()} >= {"traces.parquet", "samples.parquet",
                                                     "config.json", "meta.json"}
        pcfg = json.loads((pdir / "config.json").read_text())
        assert pcfg["params"]["U_0_star"] == u0 and pcfg["seed"] == int(design.seed[design.point_id == pid].iloc[0])
        tr = read_traces(pdir / "traces.parquet")
        u = tr[tr.variable == "u_S"].value.max()
        assert u > u0 - 1e-12                           # the grid value reached the model
        s = read_traces(pdir / "samples.parquet")
        assert s.attrs["model"] == "tripartite" and s.attrs["slow_variable"] == "rho"
        assert s.attrs["tau_cycle_s"] == 0.3
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_points"] == 2 and meta["points_run"] == 2
    # a finished sweep is never overwritten
    with pytest.raises(RunExistsError):
        sweep(cfg, out, progress=False)
    # interrupted part-way: p0001 lost, sweep not finished -> resume redoes only p0001
    keep = (out / "points" / "p0000" / "traces.parquet").read_bytes()
    mtime = (out / "points" / "p0000" / "meta.json").stat().st_mtime_ns
    (out / "meta.json").unlink()
    for f in (out / "points" / "p0001").iterdir():
        f.unlink()
    (out / "points" / "p0001").rmdir()
    sweep(cfg, out, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["points_skipped"] == 1 and meta["points_run"] == 1
    assert (out / "points" / "p0000" / "meta.json").stat().st_mtime_ns == mtime
    assert (out / "points" / "p0000" / "traces.parquet").read_bytes() == keep
    assert (out / "points" / "p0001" / "meta.json").is_file()


def test_bad_input_is_one_clear_error_and_loses_nothing(tmp_path):
    out = tmp_path / "sw"
    cfg = SweepConfig(base=TINY, grid={"params.alpha": [0.0]})
    sweep(cfg, out, progress=False)
    (out / "meta.json").unlink()                    # as if interrupted: still resumable
    before = snapshot(out)
    cases = [
        (SweepConfig(base=TINY, grid={"params.nope": [1, 2]}), {}, "grid key 'params.nope' is not a parameter"),
        (SweepConfig(base=TINY, grid={}), {}, "grid is empty"),
        (SweepConfig(base=TINY, grid={"params.alpha": []}), {}, "expected a non-empty list"),
        (SweepConfig(base=TINY, grid={"protocol.pre_times_s": [[0.1], [0.1, 0.5]]}), {},
         r"sweep point p0001 .*presynaptic spike time 0\.5 s is outside the run \[0, 0\.3\)"),
        (cfg, {"executor": "dask", "scheduler": "tcp://127.0.0.1:9", "connect_timeout_s": 2.0},
         r"scheduler 'tcp://127.0.0.1:9' is unreachable within 2 s"),
        (cfg, {"executor": "threads"}, "executor = 'threads'"),
    ]
    for bad, kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            sweep(bad, out, progress=False, **kwargs)
        assert snapshot(out) == before
    with pytest.raises(ConfigError, match="--grid 'params.alpha'"):
        load_sweep_config(None, ["params.alpha"])
    assert load_sweep_config(None, ["params.alpha=0,0.9", "protocol.kind=trains"]).grid == {
        "params.alpha": [0, 0.9], "protocol.kind": ["trains"]}


def test_cli_bad_grid_key_exits_2(run_cli, tmp_path):
    cfg = tmp_path / "sim.json"
    cfg.write_text(json.dumps(TINY))
    proc = run_cli("sweep", "--config", cfg, "--out", tmp_path / "sw", "--grid", "params.nope=1,2")
    assert proc.returncode == 2
    assert "grid key 'params.nope' is not a parameter" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "sw").exists()


def test_cli_runs_a_sweep(run_cli, tmp_path):
    cfg = tmp_path / "sweep.json"
    cfg.write_text(json.dumps({"base": TINY, "seed": 3}))
    proc = run_cli("sweep", "--config", cfg, "--out", tmp_path / "sw", "--grid", "params.alpha=0,0.9",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    design = pd.read_parquet(tmp_path / "sw" / "design.parquet")
    assert list(design["params.alpha"]) == [0, 0.9]
    assert (tmp_path / "sw" / "meta.json").is_file()


def _all_traces(out: Path) -> dict[str, pd.DataFrame]:
    design = pd.read_parquet(out / "design.parquet")
    return {pid: read_traces(out / "points" / pid / "traces.parquet") for pid in design.point_id}


@pytest.mark.slow
def test_dask_local_cluster_of_two_processes_and_local_processes_equal_serial(tmp_path):
    base = {**TINY, "target": "cython"}
    cfg = SweepConfig(base=base, grid={"params.alpha": [0.0, 0.9], "params.U_0_star": [0.3, 0.6]},
                      seed=11)
    serial = sweep(cfg, tmp_path / "serial", progress=False)
    # sweep starts a loopback LocalCluster of 2 worker processes (a scheduler address given
    # instead goes through the very same dask.distributed.Client call)
    dask = sweep(cfg, tmp_path / "dask", executor="dask", workers=2, progress=False)
    procs = sweep(cfg, tmp_path / "procs", executor="processes", workers=2, progress=False)
    meta = json.loads((dask / "meta.json").read_text())
    assert meta["executor"] == "dask" and meta["workers"] == 2 and meta["points_run"] == 4
    a = _all_traces(serial)
    for other in (dask, procs):
        pd.testing.assert_frame_equal(pd.read_parquet(serial / "design.parquet"),
                                      pd.read_parquet(other / "design.parquet"))
        b = _all_traces(other)
        assert a.keys() == b.keys()
        for pid in a:
            pd.testing.assert_frame_equal(a[pid], b[pid], check_exact=True)
    # the grid values reached the workers: points differ from each other
    assert not a["p0000"].value.equals(a["p0003"].value)


def test_sweep_through_a_scheduler_address_on_loopback_equals_serial(tmp_path):
    """A real dask.distributed scheduler on 127.0.0.1, reached by its tcp:// address (the
    multi-machine recipe with one local worker); several points per task (chunks)."""
    from dask.distributed import LocalCluster

    from astro_sim.sweep import chunks
    cfg = SweepConfig(base=TINY, grid={"params.U_0_star": [0.3, 0.45, 0.6]}, seed=3)
    serial = sweep(cfg, tmp_path / "serial", progress=False)
    # guided chunks: point order kept, large first, single points at the end (short tail)
    for n, slots in ((10, 1), (42, 2), (3, 2), (100, 16)):
        parts = chunks(list(range(n)), slots)
        sizes = [len(c) for c in parts]
        assert sum(parts, []) == list(range(n))
        assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
        assert sizes[0] == -(-n // (2 * slots))
    assert [len(c) for c in chunks(list(range(10)), 1)] == [5, 3, 1, 1]
    assert [len(c) for c in chunks(list(range(7)), 4, size=3)] == [3, 3, 1]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        remote = sweep(cfg, tmp_path / "remote", executor="dask", scheduler=address, progress=False)
    meta = json.loads((remote / "meta.json").read_text())
    assert meta["executor"] == "dask" and meta["points_run"] == 3
    a, b = _all_traces(serial), _all_traces(remote)
    assert a.keys() == b.keys()
    for pid in a:
        pd.testing.assert_frame_equal(a[pid], b[pid], check_exact=True)
