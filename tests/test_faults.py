"""Fault injection: kill -9 mid-run and resume, two processes on one run directory, output
locations that cannot be written, and the table of bad inputs in docs/bad_inputs.md.

Each refusal must be one line on stderr with exit status 2 and leave nothing behind; each
killed run must resume to the very bytes of an uninterrupted one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rmaat_app.cli import main

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad_inputs.md"
SAMPLES = REPO / "astro_rmaat" / "data" / "retention" / "default_samples.parquet"

# A tiny deterministic recall run (CPU, one thread): a checkpoint after every step.
TRAIN = ["train", "--task", "recall", "--model", "rmaat", "--quiet",
         *[a for s in ("max_len=32", "batch_size=8", "eval_every=25", "device=\"cpu\"",
                       "model.d_model=16", "model.n_heads=2", "model.n_layers=1", "model.d_ff=32",
                       "model.segment_len=8", "model.n_mem=2", "model.dropout=0.1", "ckpt_every=1")
           for a in ("--set", s)]]
# A sweep of cheap points (tripartite, numpy target: nothing to compile).
SWEEP_BASE = {"model": "tripartite", "target": "numpy", "record_dt_ms": 50.0,
              "record": ["u_S", "rho"],
              "protocol": {"kind": "explicit", "pre_times_s": [0.05, 0.1, 0.15, 0.2],
                           "explicit_duration_s": 0.3}}
SWEEP_GRID = ["--grid", "params.U_0_star=0.2,0.3,0.4,0.5,0.6,0.7"]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rmaat_app", *map(str, args)], cwd=REPO,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rmaat(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rmaat_app", *map(str, args)], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the run to get going")
        time.sleep(0.01)


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# --------------------------------------------------------------------------- kill -9 and resume
@pytest.mark.slow
def test_kill9_train_mid_run_then_resume_gives_the_uninterrupted_weights(tmp_path):
    steps = ["--steps", "120"]
    ref = rmaat(*TRAIN, *steps, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    proc = spawn(*TRAIN, *steps, "--out", run)

    def some_steps_saved() -> bool:
        try:
            return json.loads((run / "timing.json").read_text())["elapsed_s"] >= 0 and \
                (run / "ckpt.pt").is_file() and (run / "metrics.csv").is_file()
        except (OSError, ValueError):
            return False
    wait_for(some_steps_saved, proc)
    kill9(proc)
    assert not (run / "meta.json").exists(), "the run ended before the kill; make it longer"
    # the killed process's lock is stale: its pid is still in the file, the kernel freed it
    assert (run / ".lock").read_text().split()[0] == str(proc.pid)
    res = rmaat(*TRAIN, *steps, "--out", run)
    assert res.returncode == 0, res.stderr
    for name in ("model.safetensors", "best.safetensors", "ckpt.pt", "metrics.csv", "results.json"):
        assert sha(run / name) == sha(tmp_path / "ref" / name), f"{name} differs after kill -9"
    assert not (run / ".lock").exists() and not (run / "timing.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_checkpoints_the_step_under_way_and_resume_gives_the_uninterrupted_weights(
        sig, status, tmp_path):
    """A checkpoint every 20 steps: the first one shows the loop under way; the signal then
    writes one at the step it reports (whatever the cadence), and the resumed run ends with the
    uninterrupted run's bytes."""
    cmd = [*TRAIN[:-2], "--set", "ckpt_every=20", "--set", "eval_every=1000", "--steps", "300"]
    assert TRAIN[-1] == "ckpt_every=1"
    ref = rmaat(*cmd, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    proc = spawn(*cmd, "--out", run)
    wait_for(lambda: (run / "ckpt.pt").is_file(), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    said = re.search(r"at step (\d+) of 300: checkpoint written", err)
    assert said, err
    assert not (run / "meta.json").exists() and (run / "ckpt.pt").is_file()
    import torch
    assert torch.load(run / "ckpt.pt", weights_only=False)["step"] == int(said.group(1))
    res = rmaat(*cmd, "--out", run)
    assert res.returncode == 0, res.stderr
    for name in ("model.safetensors", "best.safetensors", "ckpt.pt", "metrics.csv", "results.json"):
        assert sha(run / name) == sha(tmp_path / "ref" / name), f"{name} differs after the signal"


@pytest.mark.slow
def test_kill9_sweep_mid_run_then_resume_gives_the_uninterrupted_sweep(tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps(SWEEP_BASE))
    ref = rmaat("sweep", "--config", base, *SWEEP_GRID, "--quiet", "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "sw"
    proc = spawn("sweep", "--config", base, *SWEEP_GRID, "--quiet", "--out", out)
    wait_for(lambda: (out / "points" / "p0001" / "meta.json").is_file(), proc)
    kill9(proc)
    assert not (out / "meta.json").exists(), "the sweep ended before the kill"
    res = rmaat("sweep", "--config", base, *SWEEP_GRID, "--quiet", "--out", out)
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert 0 < meta["points_skipped"] < 6 and meta["points_run"] == 6 - meta["points_skipped"]
    assert sha(out / "design.parquet") == sha(tmp_path / "ref" / "design.parquet")
    for p in sorted((tmp_path / "ref" / "points").iterdir()):
        for name in ("config.json", "traces.parquet", "samples.parquet"):
            assert sha(out / "points" / p.name / name) == sha(p / name), f"{p.name}/{name}"


# --------------------------------------------------------------------------- one lock per run
@pytest.mark.slow
@pytest.mark.parametrize("verb", ["train", "sweep"])
def test_second_process_on_a_busy_out_is_refused_at_once_naming_the_holder(verb, tmp_path):
    run = tmp_path / "run"
    if verb == "train":
        argv = [*TRAIN, "--steps", "100000", "--out", run]
    else:
        base = tmp_path / "base.json"
        base.write_text(json.dumps(SWEEP_BASE))
        argv = ["sweep", "--config", base, "--grid", "params.U_0_star=" + ",".join(
            f"{0.1 + 0.01 * k:.2f}" for k in range(60)), "--quiet", "--out", run]
    first = spawn(*argv)
    try:
        wait_for(lambda: (run / "config.json").is_file(), first)
        second = rmaat(*argv, timeout=120)
        line = one_line_error(second)
        assert f"in use by pid {first.pid}" in line and str(run) in line
        assert first.poll() is None            # the holder runs on, untouched
    finally:
        kill9(first)


def test_sweep_points_are_locked_each(tmp_path):
    """A point being run by another process is refused, not run twice."""
    from astro_rmaat import runs
    from astro_rmaat.errors import RunBusyError
    point = tmp_path / "points" / "p0000"
    code = ("import sys, time; from astro_rmaat import runs; "
            "runs.prepare_run_dir(sys.argv[1], {'a': 1}); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(point)], env=_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusyError, match=f"pid {holder.pid}"):
            runs.prepare_run_dir(point, {"a": 1})
    finally:
        kill9(holder)
    runs.prepare_run_dir(point, {"a": 1})      # the dead holder's lock is taken over
    runs.finish_run(point, {"stage": "test"})
    assert not (point / ".lock").exists()


# --------------------------------------------------------------------------- unwritable --out
@pytest.fixture
def locked_dir(tmp_path):
    """A directory nobody may write into: immutable (root) or read-only mode (others)."""
    d = tmp_path / "ro"
    d.mkdir()
    immutable = False
    if os.geteuid() == 0:
        immutable = shutil.which("chattr") is not None and \
            subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0
    else:
        d.chmod(0o555)
    try:
        (d / "probe").touch()
    except OSError:
        pass
    else:
        (d / "probe").unlink()
        pytest.skip("cannot make an unwritable directory here (root without chattr)")
    yield d
    if immutable:
        subprocess.run(["chattr", "-i", str(d)], check=True)
    d.chmod(0o755)


def verb_args(verb: str, out: Path) -> list[str]:
    sweep_dir = REPO / "tests" / "no-such-sweep"   # never read: the output is checked first
    return {
        "simulate": ["simulate", "--set", "protocol.n_cycles=3", "--out", out],
        "sweep": ["sweep", "--grid", "params.U_0_star=0.3,0.6", "--quiet", "--out", out],
        "fit": ["fit", SAMPLES, "--out", out],
        "generate listops": ["generate", "listops", "--n-train", "4", "--n-val", "2", "--n-test", "2",
                             "--out", out],
        "generate pathfinder": ["generate", "pathfinder", "--n", "2", "--workers", "1", "--out", out],
        "train": [*TRAIN, "--steps", "2", "--out", out],
        "pipeline": ["pipeline", "--quick", "--out", out],
        "sensitivity": ["sensitivity", sweep_dir, "--out", out],
    }[verb]


VERBS = ["simulate", "sweep", "fit", "sensitivity", "generate listops", "generate pathfinder",
         "train", "pipeline"]


@pytest.mark.parametrize("verb", VERBS)
def test_unwritable_out_is_one_line_exit_2_nothing_created(verb, locked_dir, capsys):
    out = locked_dir / "run"
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in verb_args(verb, out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert exc.value.code == 2 and len(err) == 1, err
    assert str(locked_dir) in err[0] and ("not permitted" in err[0] or "denied" in err[0]
                                          or "read-only" in err[0].lower()), err[0]
    assert list(locked_dir.iterdir()) == []


@pytest.mark.parametrize("verb", ["simulate", "fit", "train", "generate listops"])
def test_out_through_a_file_is_one_line_exit_2(verb, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in verb_args(verb, blocker / "run")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert exc.value.code == 2 and len(err) == 1 and "is not a directory" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_full_disk_mid_run_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """ENOSPC while writing an output (simulated at the figure): one line, exit 2, and the
    half-made run directory is removed so the rerun starts clean."""
    from distill import plots

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(plots, "save_fit_figure", full)
    out = tmp_path / "deep" / "fit"
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(SAMPLES), "--models", "exp", "--n-starts", "1", "--out", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert exc.value.code == 2 and len(err) == 1 and "No space left on device" in err[0], err
    assert "fit.png" in err[0] and not (tmp_path / "deep").exists()
