"""The shared plumbing: atomic run directories, config checking, the two file formats."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from typing import Literal

import numpy as np
import pandas as pd
import pytest

from astro_rmaat import config as cfgmod
from astro_rmaat import resources, retention, runs, traces
from astro_rmaat.errors import ConfigError, DataError, RunExistsError


@dataclasses.dataclass(frozen=True)
class Inner:
    tau_s: float = 1.0  # s
    n: int = 3


@dataclasses.dataclass(frozen=True)
class Outer:
    name: Literal["a", "b"] = "a"
    inner: Inner = Inner()
    values: tuple[float, ...] = (1.0, 2.0)
    flag: bool = False

    def __post_init__(self):
        cfgmod.require_positive("inner.tau_s", self.inner.tau_s, "s")


def test_config_round_trip_and_overrides():
    cfg = cfgmod.load_config(Outer, overrides=["inner.tau_s=2.5", "name=b", "values=[3, 4]"])
    assert cfg == Outer(name="b", inner=Inner(tau_s=2.5), values=(3.0, 4.0))
    assert cfgmod.from_dict(Outer, cfgmod.to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, needle", [
    ("inner.tau=1", "inner.tau"),              # unknown key
    ("inner.tau_s=-1", "inner.tau_s = -1"),    # negative time constant
    ("inner.tau_s=0", "positive"),             # zero time constant
    ("inner.n=1.5", "expected an integer"),    # wrong type
    ("name=c", "expected one of"),             # not a choice
    ("flag=1", "true or false"),
    ("novalue", "KEY=VALUE"),
])
def test_config_bad_input_names_the_value(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        cfgmod.load_config(Outer, overrides=[override])


def test_config_file_unknown_key(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"inner": {"tau_s": 2, "bogus": 1}}))
    with pytest.raises(ConfigError, match="inner.bogus"):
        cfgmod.load_config(Outer, p)


def test_run_dir_refuses_finished_and_different(tmp_path):
    out = tmp_path / "run"
    runs.prepare_run_dir(out, {"a": 1})
    runs.prepare_run_dir(out, {"a": 1})  # same config: resumable
    with pytest.raises(RunExistsError, match="different config"):
        runs.prepare_run_dir(out, {"a": 2})
    runs.finish_run(out, runs.make_meta(stage="test", seed=0, wall_time_s=0.1))
    with pytest.raises(RunExistsError, match="finished run"):
        runs.prepare_run_dir(out, {"a": 1})
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 0 and "numpy" in meta["versions"]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "f.json"
    runs.atomic_write_json(p, {"ok": True})
    with pytest.raises(RuntimeError):
        with runs.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert json.loads(p.read_text()) == {"ok": True}
    assert [x.name for x in tmp_path.iterdir()] == ["f.json"]


def _trace_df(n=5):
    t = np.arange(n, dtype=float)
    return pd.DataFrame({"t_s": np.r_[t, t], "variable": ["p_l"] * n * 2,
                         "element": [0] * n + [1] * n, "value": np.r_[1 - np.exp(-t), 2 * (1 - np.exp(-t))],
                         "unit": ["1"] * n * 2})


def test_traces_round_trip_and_select(tmp_path):
    p = tmp_path / "traces.parquet"
    sha = traces.write_traces(_trace_df(), p, {"model": "toy", "tau_cycle_s": 1.0})
    assert sha == runs.sha256_file(p)
    df = traces.read_traces(p)
    assert df.attrs["model"] == "toy" and df.attrs["schema"] == traces.SCHEMA
    t, y = traces.select_curve(df, "p_l")
    np.testing.assert_allclose(y, 1.5 * (1 - np.exp(-t)))
    with pytest.raises(DataError, match="'q'.*available: p_l"):
        traces.select_curve(df, "q")


def test_trace_names_take_one_string_object_each_and_the_written_bytes_do_not_change(tmp_path):
    """The name columns are made as astype(str).to_numpy(dtype=object) makes them (missing
    values and categories included) but with one str object for each distinct name, not one a
    row, and the table writes the same Parquet bytes as one built that way; write_traces lets go
    of the frame handed to it before the Arrow table is built (the trace memory check's figure
    counts on both: bench/trace_memory.py)."""
    import gc
    import weakref

    odd = pd.DataFrame({"t_s": [0.0, 1.0, 2.0, 3.0], "variable": pd.Categorical(["x", "y", "x", "x"]),
                        "element": [0, 0, 0, 1], "value": [1.0, 2.0, 3.0, 4.0],
                        "unit": pd.Series(["mV", None, "mV", np.nan], dtype=object)})
    for df in (_trace_df(), odd):
        for col in ("variable", "unit"):
            old = df[col].astype(str).to_numpy(dtype=object)
            new = traces._names(df[col])
            assert new.dtype == object and [type(v) for v in new] == [type(v) for v in old]
            assert all(a == b or (a != a and b != b) for a, b in zip(new, old, strict=True))
            assert len({id(v) for v in new}) == len(set(map(str, old)))   # one object a distinct name
    df = _trace_df(400)
    by_formula = df.assign(variable=df["variable"].astype(str).to_numpy(dtype=object),
                           unit=df["unit"].astype(str).to_numpy(dtype=object))
    a = traces.write_traces(df, tmp_path / "a.parquet", {"model": "toy"})
    b = traces.write_traces(by_formula, tmp_path / "b.parquet", {"model": "toy"})
    assert a == b
    seen = []

    def handed():
        frame = _trace_df()
        seen.append(weakref.ref(frame))
        return frame

    real = traces.validate

    def validate(table, where="traces"):   # runs after the copy, before the Arrow table
        gc.collect()
        seen.append(seen[0]() is None)
        real(table, where)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(traces, "validate", validate)
        traces.write_traces(handed(), tmp_path / "c.parquet", {"model": "toy"})
    assert seen[1] is True


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.assign(value=np.nan), "non-finite"),
    (lambda d: d.iloc[::-1], "not increasing"),
    (lambda d: d.iloc[:0], "empty"),
])
def test_traces_reject_bad_tables(tmp_path, mutate, needle):
    with pytest.raises(DataError, match=needle):
        traces.write_traces(mutate(_trace_df()), tmp_path / "x.parquet", {"model": "toy"})
    assert not (tmp_path / "x.parquet").exists()


def test_traces_reader_names_a_missing_path_and_a_path_that_is_not_a_file(tmp_path):
    with pytest.raises(DataError, match="'.*missing.parquet' does not exist"):
        traces.read_traces(tmp_path / "missing.parquet")
    with pytest.raises(DataError, match="is not a regular file; expected a Parquet file"):
        traces.read_traces(tmp_path)


def retention_doc(tau=3.0, tau_cycle=1.0, K=64):
    k = np.arange(K + 1)
    p = 1 - np.exp(-k * tau_cycle / tau)
    return {"schema": retention.SCHEMA, "tau_cycle_s": tau_cycle, "p_inf": 1.0,
            "model": {"name": "exp_saturation", "params": {"p_inf": {"value": 1.0, "stderr": 0.01},
                                                          "tau": {"value": tau, "stderr": 0.1}}},
            "candidates": [], "curve": {"t_cycles": k.tolist(), "p": p.tolist()},
            "source": {"traces": "x", "sha256": "0" * 64}}


def test_retention_closed_form_for_exponential():
    r = retention.validate_document(retention_doc(tau=3.0))
    T = 8
    q = np.exp(-1.0 / 3.0)
    t = np.arange(1, T + 1)
    np.testing.assert_allclose(r.rf(T), (1 - q) * q ** (t - 1) / (1 - q ** T), rtol=1e-12)
    assert r.rf(T).sum() == pytest.approx(1.0)
    assert np.all(np.diff(r.rf(T)) < 0)
    # streaming form: the T -> infinity limit
    assert np.max(np.abs(r.rf(64)[:8] - r.rf_stream(8))) < 1e-8


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.update(schema="rmaat.retention/v0"), "schema"),
    (lambda d: d["model"]["params"]["tau"].update(value=-3.0), "time constant 'tau'"),
    (lambda d: d.update(tau_cycle_s=0), "tau_cycle_s"),
    (lambda d: d["curve"].update(p=d["curve"]["p"][::-1]), "monotone"),
])
def test_retention_reader_rejects(edit, needle):
    doc = retention_doc()
    edit(doc)
    with pytest.raises(DataError, match=needle):
        retention.validate_document(doc)


def test_cli_lists_commands_without_heavy_imports(run_cli):
    proc = run_cli("--help", check=True)
    for name in ("simulate", "sweep", "fit", "train", "evaluate", "pipeline"):
        assert name in proc.stdout
    code = ("import sys, contextlib, io\nfrom rmaat_app import cli\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    cli.main(['--help'])\n"
            "print('brian2' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().endswith("False False"), out.stdout + out.stderr


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    import stat

    p = runs.atomic_write_text(tmp_path / "m.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_argument_parser_error_is_one_line_exit_2(capsys):
    """astro_rmaat.cli_args: argparse's usage block and message become one line naming the value."""
    from astro_rmaat.cli_args import ArgumentParser

    ap = ArgumentParser(prog="bench.py")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--task", choices=("assoc", "recall"), default="assoc")
    for argv, needle in ((["--steps", "abc"], "argument --steps: invalid int value: 'abc'"),
                         (["--task", "nope"], "argument --task: invalid choice: 'nope'"),
                         (["--nope"], "unrecognized arguments: --nope")):
        with pytest.raises(SystemExit) as exc:
            ap.parse_args(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith("error: bench.py: ") and needle in err and "'bench.py --help'" in err
    assert ap.parse_args(["--steps", "3"]).steps == 3


def test_counts_and_project_errors_of_a_script_are_one_line(capsys, monkeypatch):
    """positive_int / count_int name a zero or negative count; run_main turns a project error
    the parser let through into one line and exit status 2, and passes main's own status on."""
    from astro_rmaat.cli_args import ArgumentParser, count_int, positive_int, run_main
    from astro_rmaat.errors import ConfigError

    ap = ArgumentParser(prog="bench.py")
    ap.add_argument("--repeats", type=positive_int, default=1)
    ap.add_argument("--seed", type=count_int, default=0)
    for argv, needle in ((["--repeats", "0"], "argument --repeats: '0': expected a positive integer"),
                         (["--seed", "-1"], "argument --seed: '-1': expected an integer >= 0")):
        with pytest.raises(SystemExit) as exc:
            ap.parse_args(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and needle in err, err
    assert ap.parse_args(["--seed", "0"]).seed == 0
    monkeypatch.setattr(sys, "argv", ["/somewhere/bench.py"])

    def bad():
        raise ConfigError("model d_model = 63 is not divisible by n_heads = 4")
    with pytest.raises(SystemExit) as exc:
        run_main(bad)
    assert exc.value.code == 2
    assert capsys.readouterr().err == "error: bench.py: model d_model = 63 is not divisible by n_heads = 4\n"
    for status in (None, 0, 3):
        with pytest.raises(SystemExit) as exc:
            run_main(lambda: status)
        assert exc.value.code == (status or 0)


def test_every_bench_and_script_parser_reports_one_line(repo_root):
    """Each bench and script parses its command line with the one-line parser; one of them,
    run as a user runs it, answers a bad value with one line and exit status 2."""
    files = sorted([*repo_root.glob("bench/*.py"), *repo_root.glob("scripts/*.py")])
    parsers = [f for f in files if "ArgumentParser(" in f.read_text()]
    assert len(parsers) >= 15
    for f in parsers:
        text = f.read_text()
        assert "argparse.ArgumentParser(" not in text, f"{f.name}: argparse's own parser (errors of several lines)"
        assert "from astro_rmaat.cli_args import ArgumentParser" in text, f.name
        assert not re.search(r"add_argument\([^)]*type=int\b", text), f"{f.name}: a count without a range (cli_args.positive_int / count_int)"
    for f in files:
        if 'if __name__ == "__main__":' in f.read_text():
            assert 'if __name__ == "__main__":\n    run_main(main)\n' in f.read_text(), f"{f.name}: not run_main"
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    proc = subprocess.run([sys.executable, str(repo_root / "bench" / "chi_window.py"), "--duration", "abc"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "chi_window.py: argument --duration: invalid float value: 'abc'" in proc.stderr


def test_rmaat_usage_error_from_the_command_line_is_one_line(run_cli, tmp_path):
    """The console path (argv from sys.argv): click's parse errors are one line, exit 2, and
    name the nested command they concern."""
    for args, needle in ((("train", "--steps", "abc"), "error: rmaat train: Invalid value for '--steps': 'abc'"),
                         (("generate", "pathfinder", "--out", str(tmp_path / "out"), "--n"),
                          "error: rmaat generate pathfinder: Option '--n' requires an argument")):
        proc = run_cli(*args)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_memory_limit_reads_cgroup_v2_and_v1_limits(tmp_path, monkeypatch):
    """A container's limit (cgroup v2 memory.max, v1 memory.limit_in_bytes, in the group's own
    folder or at the mount's root) caps the machine's memory; "max" is no limit."""
    proc = tmp_path / "cgroup"
    root = tmp_path / "fs"
    (root / "job").mkdir(parents=True)
    (root / "job" / "memory.max").write_text("1073741824\n")
    proc.write_text("0::/job\n")
    assert resources.cgroup_memory_limits(proc, root) == [2**30]
    (root / "job" / "memory.max").write_text("max\n")
    assert resources.cgroup_memory_limits(proc, root) == []
    (root / "memory").mkdir()
    (root / "memory" / "memory.limit_in_bytes").write_text("536870912\n")   # v1, namespaced: at the root
    proc.write_text("4:memory:/docker/abc\n1:cpu:/\n")
    assert resources.cgroup_memory_limits(proc, root) == [2**29]
    assert resources.cgroup_memory_limits(tmp_path / "none", root) == []
    monkeypatch.setattr(resources, "cgroup_memory_limits", lambda: [2**20])
    assert resources.memory_limit_bytes() == 2**20
    monkeypatch.setattr(resources, "cgroup_memory_limits", lambda: [2**62])
    assert resources.memory_limit_bytes() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_the_hippo_bench_refuses_sizes_that_cannot_fit_before_any_work(repo_root):
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    for argv, needle in ((["--n-coef", "10000000"], "--n-coef 10000000: two 10000000 x 10000000 float64 matrices "
                                                    "take at least 1,490,116.1 GiB"),
                         (["--speed-n-coef", "10000000"], "--speed-n-coef 10000000, --segment-len 128: 132 float64 "
                                                          "matrices of 10000000 x 10000000 take at least")):
        proc = subprocess.run([sys.executable, str(repo_root / "bench" / "hippo_discretisation.py"), *argv],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
        assert proc.stdout == ""
