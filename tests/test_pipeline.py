"""`rmaat pipeline --quick` end to end from a fresh directory; the report's numbers are the
run files' numbers; a finished pipeline is refused, not overwritten."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from astro_rmaat.retention import load_retention
from astro_rmaat.traces import read_traces, select_curve


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("pipeline") / "run"
    env = dict(os.environ, PYTHONPATH=str(repo), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "rmaat_app", "pipeline", "--quick", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow
def test_pipeline_writes_every_stage_and_a_report(quick_run):
    out, proc = quick_run
    assert f"report: {out / 'report.md'}" in proc.stdout
    for stage in ("sim", "fit", "train/rmaat", "train/rmaat-none", "train/at-segment", "."):
        assert (out / stage / "config.json").is_file() and (out / stage / "meta.json").is_file(), stage
    report = (out / "report.md").read_text()
    for rel in ("figures/traces.png", "figures/schedule.png", "figures/training.png",
                "figures/forgetting.png", "fit/fit.png"):
        assert f"]({rel})" in report
        assert (out / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel


@pytest.mark.slow
def test_report_numbers_come_from_the_run_files(quick_run):
    out, _ = quick_run
    report = (out / "report.md").read_text()
    # the saturation figure, recomputed from samples.parquet
    t, p = select_curve(read_traces(out / "sim" / "samples.parquet"), "p_l")
    dp = np.diff(p)
    assert f"ratio last/first **{dp[-1] / dp[0]:.3f}**" in report
    # the chosen model and its parameters, from fit.json
    fit = json.loads((out / "fit" / "fit.json").read_text())
    assert f"**{fit['chosen']}** with" in report
    # the schedule, from retention.json
    res = json.loads((out / "results.json").read_text())
    T = res["schedule"]["T"]
    rf = load_retention(out / "fit" / "retention.json").rf(T)
    assert "| RF(t, T) | " + " | ".join(f"{v:.3f}" for v in rf) + " |" in report
    # test accuracies, from each training run's results.json
    for arch in ("rmaat", "rmaat-none", "at-segment"):
        r = json.loads((out / "train" / arch / "results.json").read_text())
        assert f"| {100 * r['val_acc']:.1f}% | {100 * r['test_acc']:.1f}% |" in report
        with open(out / "train" / arch / "metrics.csv") as fh:
            assert len(list(csv.DictReader(fh))) >= 20                # learning curves of 20+ points
        cfg = json.loads((out / "train" / arch / "config.json").read_text())
        assert cfg["steps"] == 40 and cfg["max_minutes"] is None      # quick: a step count, not a budget
    # the forgetting curve: accuracy by age, recomputed here from the best checkpoint
    from rmaat_model.evaluate import accuracy_by_age
    from astro_rmaat.config import from_dict
    from rmaat_model.checkpoint import load_weights
    from rmaat_model.train_config import TrainConfig, load_data
    cfg = from_dict(TrainConfig, json.loads((out / "train" / "rmaat" / "config.json").read_text()))
    by_age = accuracy_by_age(load_weights(out / "train" / "rmaat"), load_data(cfg, ("test",))[1]["test"])
    assert sorted(by_age) == [1, 2, 3]                                  # quick: 2..4 segments
    assert res["training"]["rmaat"]["by_age"] == {str(a): v["acc"] for a, v in by_age.items()}
    assert "With the schedule distilled from the astrocyte, rmaat reached" in report


@pytest.mark.slow
def test_rerun_of_a_finished_pipeline_is_refused(quick_run, run_cli):
    out, _ = quick_run
    before = (out / "report.md").read_bytes()
    proc = run_cli("pipeline", "--quick", "--out", out)
    assert proc.returncode == 2
    assert "already holds a finished pipeline" in proc.stderr and "report.md" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / "report.md").read_bytes() == before


def test_pipeline_bad_input(run_cli, tmp_path):
    proc = run_cli("pipeline", "--out", tmp_path / "x", "--set", "budget_minutes=-1")
    assert proc.returncode == 2 and "budget_minutes = -1" in proc.stderr
    proc = run_cli("pipeline", "--out", tmp_path / "y", "--set", "n_trian=5")
    assert proc.returncode == 2 and "n_trian" in proc.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_pipeline_distils_the_tripartite_family(run_cli, tmp_path):
    out = tmp_path / "trip"
    proc = run_cli("pipeline", "--quick", "--family", "tripartite", "--models", "rmaat", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sim_cfg = json.loads((out / "sim" / "config.json").read_text())
    assert sim_cfg["model"] == "tripartite"
    report = (out / "report.md").read_text()
    assert "`rho` sampled at" in report and "| rmaat | amrb |" in report
    assert load_retention(out / "fit" / "retention.json").document["source"]["variable"] == "rho"
