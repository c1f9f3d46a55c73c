"""bench/retention_curve.py: its command line refuses bad input before writing anything, and
``--compare`` tests the right runs against each other (exact Mann-Whitney answers)."""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("retention_curve", ROOT / "bench" / "retention_curve.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod   # dataclasses resolve the module's annotations through it
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def pieces(bench):
    """bench/_retention_report.py, the report pieces the benchmark imports."""
    return sys.modules["_retention_report"]


@pytest.fixture(scope="module")
def answers(bench):
    """bench/_assoc_answers.py, the answer columns the benchmark imports."""
    return sys.modules["_assoc_answers"]


def _rows(T, K, model, accs):
    return [{"task": "assoc", "T": T, "K": K, "model": model, "seed": s, "test_acc": a}
            for s, a in enumerate(accs)]


def test_compare_exact_p_of_separated_samples(bench, pieces):
    """Two samples with every value of one above every value of the other: U takes its extreme,
    and the exact two-sided p is 2 / C(n1 + n2, n1) (one arrangement of ranks at each end)."""
    rows = (_rows(8, 1, "none-pre", [0.60, 0.70, 0.80, 0.90, 0.95])
            + _rows(8, 1, "ltp", [0.13, 0.20, 0.25, 0.30])
            # another setting, where the order is reversed: it must not enter T=8, K=1's test
            + _rows(4, 1, "none-pre", [0.11, 0.12]) + _rows(4, 1, "ltp", [0.91, 0.92]))
    out = pieces.compare(rows, [("none-pre", "ltp")])
    lines = out.strip().splitlines()
    assert len(lines) == 2
    line = next(x for x in lines if x.startswith("T=8, K=1"))
    assert "U = 20" in line and "(exact; n = 5, 4)" in line
    p = float(line.split("p = ")[1].split()[0])
    assert p == pytest.approx(2 / math.comb(9, 4), rel=4e-3)
    assert "median 80.0 vs 22.5 %" in line and "mean 79.0 vs 22.0 %" in line
    other = next(x for x in lines if x.startswith("T=4, K=1"))
    assert "U = 0" in other and float(other.split("p = ")[1].split()[0]) == pytest.approx(2 / math.comb(4, 2), rel=4e-3)


def test_compare_ties_use_the_normal_approximation(bench, pieces):
    """Runs stuck at chance tie; the exact U distribution assumes none, so the line says it used
    the tie-corrected normal approximation. Identical samples give p = 1."""
    same = [0.129, 0.129, 0.3, 0.5]
    out = pieces.compare(_rows(8, 1, "ltp", same) + _rows(8, 1, "flat", same), [("ltp", "flat")])
    assert "normal approximation" in out
    assert float(out.split("p = ")[1].split()[0]) == pytest.approx(1.0)


def test_compare_skips_missing_models_and_single_runs(bench, pieces):
    rows = _rows(8, 1, "ltp", [0.2, 0.3]) + _rows(8, 1, "flat", [0.4])
    assert pieces.compare(rows, [("ltp", "none")]) == ""
    assert "a test needs 2 seeds a side" in pieces.compare(rows, [("ltp", "flat")])


def test_compare_also_tests_the_binding_where_the_rows_carry_it(bench, pieces):
    """--compare on assoc rows with blind_acc: a second line per pair tests accuracy minus
    blind_acc, in points; there the order can be the reverse of the accuracies'."""
    ltp, flat = _rows(8, 4, "ltp", [0.285, 0.334, 0.237]), _rows(8, 4, "flat", [0.184, 0.364, 0.352])
    for r, blind in zip(ltp + flat, [0.181, 0.213, 0.229, 0.181, 0.359, 0.348]):
        r["blind_acc"] = blind
    out = pieces.comparisons(ltp + flat, [("ltp", "flat")]).strip().splitlines()
    assert len(out) == 2 and "(binding)" not in out[0] and "p = 0.7 (exact; n = 3, 3)" in out[0]
    assert out[1].startswith("T=8, K=4: ltp vs flat (binding): median 10.4 vs 0.4 points, mean 7.8 vs 0.4 points")
    assert "U = 9, two-sided p = 0.1 (exact; n = 3, 3)" in out[1]
    assert pieces.comparisons(_rows(8, 4, "ltp", [0.2, 0.3]) + _rows(8, 4, "flat", [0.4, 0.5]),
                             [("ltp", "flat")]).count("\n") == 1      # no blind_acc: one line


def test_runs_of_another_depth_or_budget_are_never_reused(bench, tmp_path):
    """A finished run is reused by its folder: the folder names the steps, and the blocks when
    they are not the default one (so the one-block runs stored before --layers stay reusable)."""
    dirs = {(steps, layers): bench.jobs_for([(8, 1)], ("ltp",), steps, tmp_path, 1, 1,
                                            sizes=bench.Sizes(layers=layers))[0]["dir"]
            for steps in (1000, 3000) for layers in (1, 2)}
    assert len(set(dirs.values())) == 4
    assert dirs[1000, 1].endswith("runs/assoc_T8_K1_steps1000/ltp/seed0")
    assert dirs[3000, 2].endswith("runs/assoc_T8_K1_steps3000_L2/ltp/seed0")
    cfg = bench.base_config(8, 1, "ltp", 0, 1000, "assoc", bench.Sizes(layers=2))
    assert cfg.model.n_layers == 2 and cfg.steps == 1000


def test_sizes_name_their_runs_and_reach_the_config(bench, tmp_path):
    """--n-mem, --d-model, --retention-lr, --lr and --warmup reach the run's config and its folder (only where
    they differ from the defaults, so the runs stored before the options stay reusable); a model
    without a learned table runs at the default table rate whatever --retention-lr says."""
    def one(model="learned", **kw):
        return bench.jobs_for([(8, 4)], (model,), 3000, tmp_path, 1, 1, sizes=bench.Sizes(**kw))[0]
    plain, wide, slow, broad = one(), one(n_mem=16), one(retention_lr=0.01), one(d_model=64)
    assert plain["dir"].endswith("runs/assoc_T8_K4_steps3000/learned/seed0")
    assert wide["dir"].endswith("runs/assoc_T8_K4_steps3000_M16/learned/seed0")
    assert slow["dir"].endswith("runs/assoc_T8_K4_steps3000_rlr0.01/learned/seed0")
    assert broad["dir"].endswith("runs/assoc_T8_K4_steps3000_D64/learned/seed0")
    assert one(layers=2, n_mem=16, d_model=64, retention_lr=0.01)["dir"].endswith(
        "runs/assoc_T8_K4_steps3000_L2_M16_D64_rlr0.01/learned/seed0")
    assert one(n_mem=bench.N_MEM, retention_lr=bench.RETENTION_LR, d_model=32, lr=5e-3)["dir"] == plain["dir"]
    gentle = one("ltp", lr=1e-3)   # every model's rate, a learned table's own rate apart
    assert gentle["dir"].endswith("runs/assoc_T8_K4_steps3000_lr0.001/ltp/seed0") and gentle["sizes"]["lr"] == 1e-3
    assert bench.job_config(gentle).optim.lr == 1e-3 and bench.job_config(plain).optim.lr == 5e-3
    patient = one("ltp", warmup=1000)   # the warm-up too: its own folder, the optimiser's schedule
    assert patient["dir"].endswith("runs/assoc_T8_K4_steps3000_wu1000/ltp/seed0") and patient["sizes"]["warmup"] == 1000
    assert bench.job_config(patient).optim.warmup_steps == 1000 and bench.job_config(plain).optim.warmup_steps == 20
    fixed = one("ltp", retention_lr=0.01, d_model=64)   # no table to learn: the default rate
    assert fixed["dir"].endswith("runs/assoc_T8_K4_steps3000_D64/ltp/seed0")
    assert fixed["sizes"]["retention_lr"] == bench.RETENTION_LR and fixed["sizes"]["d_model"] == 64
    cfg = bench.base_config(8, 4, "learned", 0, 3000, "assoc", bench.Sizes(n_mem=16, d_model=64, retention_lr=0.01))
    assert (cfg.model.n_mem, cfg.model.d_model, cfg.model.d_ff, cfg.optim.retention_lr) == (16, 64, 128, 0.01)
    default = bench.base_config(8, 4, "learned", 0, 3000)
    assert (default.model.n_mem, default.model.d_model, default.model.d_ff, default.optim.retention_lr) == (
        bench.N_MEM, 32, 64, bench.RETENTION_LR) == (4, 32, 64, 0.1)


@pytest.mark.parametrize("argv, expected", [
    (["--grid", "1x1"], "--grid 1x1 (assoc, ltp): assoc max_len = 16"),
    (["--grid", "2x40"], "assoc pairs = 40"),
    (["--grid", "4x1x2"], "--grid '4x1x2': expected settings TxK"),
    (["--seeds", "abc"], "--seeds 'abc': expected two positive counts"),
    (["--seeds", "0,3"], "--seeds '0,3': expected two positive counts"),
    (["--steps", "0"], "argument --steps: '0': expected a positive integer"),
    (["--layers", "0"], "argument --layers: '0': expected a positive integer"),
    (["--d-model", "33"], "--d-model 33: expected an even width of at least 2"),
    (["--d-model", "0"], "argument --d-model: '0': expected a positive integer"),
    (["--workers", "0"], "argument --workers: '0': expected a positive integer"),
    (["--compare", "ltp"], "--compare 'ltp': expected model pairs a:b"),
    (["--compare", "ltp:nope"], "--compare: unknown model 'nope'"),
    (["--models", "ltp,nope"], "--models: unknown model 'nope'"),
    (["--replot"], "results.csv not found"),
    (["--n-mem", "0"], "argument --n-mem: '0': expected a positive integer"),
    (["--retention-lr", "0"], "--retention-lr 0: expected a finite positive learning rate"),
    (["--retention-lr", "nan"], "--retention-lr nan: expected a finite positive learning rate"),
    (["--lr", "-0.001"], "--lr -0.001: expected a finite positive learning rate"),
    (["--lr", "inf"], "--lr inf: expected a finite positive learning rate"),
    (["--warmup", "-1"], "argument --warmup: '-1': expected an integer >= 0"),
    (["--warmup", "ten"], "argument --warmup: 'ten': expected an integer >= 0"),
    (["--steps", "abc"], "argument --steps: 'abc': expected a positive integer"),       # argparse's own checks
    (["--task", "nope"], "argument --task: invalid choice: 'nope'"),
])
def test_bad_input_is_one_line_and_writes_nothing(bench, tmp_path, capsys, argv, expected):
    out = tmp_path / "out"
    argv = ["--models", "ltp"] + argv if "--models" not in argv else argv
    try:
        code = bench.main(argv + ["--out", str(out)])
    except SystemExit as exc:   # argparse's own errors exit from the parser
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert not out.exists()


def test_a_learned_run_records_where_its_table_went(bench, tmp_path):
    """results.csv: a learned table's final RF(t, T) per hand-off (t = 1 .. T-1), read from the
    trained weights; a fixed schedule's row has none."""
    from rmaat_model.checkpoint import load_weights

    rows = []
    for model in ("learned", "ltp"):
        job = bench.jobs_for([(3, 1)], (model,), 2, tmp_path, 1, 1, sizes=bench.Sizes(retention_lr=0.5))[0]
        rows += bench.run_one(job)["rows"]
        weights = load_weights(job["dir"], device="cpu").rf_table[2, :2].tolist()
        if model == "learned":
            assert [rows[-1]["rf_1"], rows[-1]["rf_2"]] == [round(v, 4) for v in weights]
        else:
            assert not any(k.startswith("rf_") for k in rows[-1])
    bench.write_results(tmp_path / "results.csv", rows, bench.SIZE_FIELDS)
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["rf_1", "rf_2"]
    assert header[6:12] == ["layers", "n_mem", "d_model", "retention_lr", "lr", "warmup"]
    assert [(r["d_model"], r["retention_lr"]) for r in rows] == [(32, 0.5), (32, bench.RETENTION_LR)]


def test_the_named_only_controls_run_only_when_named(bench, tmp_path):
    """ltp-reversed (the LTP values back to front) and flat-pre (flat in pre-LN blocks) are not
    part of the full grid, whose time budget was set without them; named, they run the
    ``reversed`` schedule, integrating, post-LN, and the ``flat`` one, integrating, pre-LN."""
    full = bench.parse_args(["--out", str(tmp_path / "a")])
    assert "ltp-reversed" not in full.models and "ltp" in full.models and "flat" in full.models
    assert "flat-pre" not in full.models and "none-pre" in full.models
    named = bench.parse_args(["--models", "ltp,ltp-reversed,flat-pre", "--grid", "8x1", "--out", str(tmp_path / "b")])
    assert named.models == ("ltp", "ltp-reversed", "flat-pre")
    cfg = bench.base_config(8, 1, "ltp-reversed", 0, 3000)
    assert (cfg.model.retention, cfg.model.retention_reading, cfg.model.norm) == ("reversed", "integrating", "post")
    cfg = bench.base_config(8, 1, "flat-pre", 0, 3000)
    assert (cfg.model.retention, cfg.model.retention_reading, cfg.model.norm) == ("flat", "integrating", "pre")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _trained(bench, tmp_path, model="ltp"):
    """A finished 2-step run in the folder the benchmark gives it, stamped with this tree's code."""
    job = bench.jobs_for([(3, 1)], (model,), 2, tmp_path, 1, 1)[0]
    job["code"] = bench._run_reuse.fingerprint()
    row = bench.run_one(job)["rows"][0]
    return job, row


def _without_versions(code):
    """``code`` as a stamp written before stamps named the package versions."""
    return {k: v for k, v in code.items() if k != "packages"}


def _other_code(code):
    """``code`` with one file's digest changed: what a stamp of other code looks like."""
    files = dict(code["files"])
    files["rmaat_model/model.py"] = "0" * 64
    return dict(code, files=files)


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")


def _scratch_repo(repo: Path, kernel: str, ignore: str | None = None) -> tuple[Path, Path, str]:
    """A git repository holding the two code folders: rmaat_model's one module (``kernel``) and
    astro_rmaat's one data file, committed; returns (module, data file, revision)."""
    import subprocess

    src, table = repo / "rmaat_model" / "kernel.py", repo / "astro_rmaat" / "table.json"
    src.parent.mkdir(parents=True)
    table.parent.mkdir()
    table.write_text("[1, 2]\n")
    src.write_text(kernel)
    if ignore is not None:
        (repo / ".gitignore").write_text(ignore)

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                              capture_output=True, text=True, check=True).stdout.strip()
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    return src, table, git("rev-parse", "HEAD")


def test_a_run_is_reused_only_while_its_config_and_code_are_this_trees(bench, tmp_path):
    """A run is stale when its stored config differs from the one the benchmark builds, when its
    stamp names other code (the file is named) or another Python, or (finished, unstamped) when
    its recorded revision is unknown or dirty; an interrupted run without a stamp is judged by its
    config alone."""
    import json
    from astro_rmaat.config import to_dict

    reuse = bench._run_reuse
    job, row = _trained(bench, tmp_path)
    run, code, cfg = Path(job["dir"]), job["code"], to_dict(bench.job_config(job))
    other = _other_code(code)
    assert row["trained_on"] == reuse.trained_on(run)
    assert reuse.read_stamp(run) == code and "rmaat_model/model.py" in code["files"]
    assert reuse.why_stale(run, cfg, code) is None
    assert reuse.why_stale(run, cfg, other) == "it was trained by other code: rmaat_model/model.py differ(s)"
    assert f"stamped under Python {code['python']}, this is 2.7" in reuse.why_stale(run, cfg, dict(code, python="2.7"))
    pre = to_dict(bench.base_config(3, 1, "ltp", 0, 2, "assoc"))
    pre["model"]["norm"] = "pre"
    assert reuse.why_stale(run, pre, code) == "its config differs, model.norm: stored 'post', given 'pre'"
    runs = [(job["dir"], cfg)]
    assert reuse.stale_runs(runs, other) == ([(str(run), reuse.why_stale(run, cfg, other), True)], [])
    meta_file = run / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.unlink()                                 # as if interrupted: judged by config and stamp
    assert reuse.stale_runs(runs, other)[0][0][2]      # resumable: the config is the same
    reuse.stamp_path(run).unlink()                     # interrupted before the stamps: its config decides
    assert reuse.why_stale(run, cfg, other) is None and reuse.stale_runs(runs, code) == ([], [])
    assert "config differs" in reuse.why_stale(run, pre, code)
    (run / "config.json").write_text(json.dumps(pre))  # an interrupted run train() would refuse
    assert reuse.stale_runs(runs, code)[0][0][2] is False
    (run / "config.json").write_text(json.dumps(cfg))
    for rev, expected in ((None, "records no code revision"), ("abc1234def+dirty", "modified tree at abc1234")):
        meta_file.write_text(json.dumps(dict(meta, git_revision=rev)))   # finished before the stamps
        assert expected in reuse.why_stale(run, cfg, code)
    reuse.stamp(run.with_name("seed0.stale-1"), code)  # a stray stamp takes that name: the next is used
    moved = reuse.set_aside(run)
    assert moved.name == "seed0.stale-2" and moved.is_dir() and not run.exists()


def test_the_fingerprint_is_the_code_not_its_comments_or_stray_files(bench, tmp_path):
    """Docstrings, comments, hidden files and caches leave the fingerprint as it was; a changed
    statement, a new module and a changed data file change it (outside a git checkout here)."""
    reuse = bench._run_reuse
    src = tmp_path / "rmaat_model" / "kernel.py"
    src.parent.mkdir(parents=True)
    (tmp_path / "astro_rmaat").mkdir()
    table = tmp_path / "astro_rmaat" / "table.json"
    table.write_text("[1, 2]\n")
    src.write_text('"""Doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 1  # one\n')
    names = [p.relative_to(tmp_path).as_posix() for p in (table, src)]
    before = reuse.fingerprint(tmp_path)
    assert sorted(before["files"]) == names
    src.write_text('"""Another."""\n\ndef f(x):\n    """Other."""\n    # a comment\n    return x + 1\n')
    (tmp_path / "rmaat_model" / ".kernel.py.swp").write_bytes(b"\0")
    (tmp_path / "rmaat_model" / "__pycache__").mkdir()
    (tmp_path / "rmaat_model" / "__pycache__" / "kernel.cpython-311.pyc").write_bytes(b"\0")
    assert reuse.fingerprint(tmp_path) == before
    src.write_text('"""Doc."""\n\ndef f(x):\n    return x + 2\n')
    assert reuse._first_change(before["files"], reuse.fingerprint(tmp_path)["files"]) == names[1]
    table.write_text("[1, 3]\n")
    (tmp_path / "rmaat_model" / "new.py").write_text("x = 1\n")
    assert reuse._first_change(before["files"], reuse.fingerprint(tmp_path)["files"]) == f"{names[0]} and 2 more"


@needs_git
def test_an_unstamped_run_is_judged_by_its_revisions_code_not_its_comments(bench, tmp_path):
    """The git fallback: a run's recorded revision against the files now, compared by code form
    (a docstring or comment edit is no change; a changed statement is), as the fingerprint is;
    files git ignores are not code."""
    import json
    from astro_rmaat.config import to_dict
    from rmaat_model.train_config import TrainConfig

    reuse = bench._run_reuse
    repo = tmp_path / "repo"
    src, _, rev = _scratch_repo(repo, '"""Doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 1  # one\n', "*.log\n")
    run = tmp_path / "run"
    run.mkdir()
    cfg = to_dict(TrainConfig())
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "meta.json").write_text(json.dumps({"git_revision": rev}))
    before = reuse.fingerprint(repo)
    assert reuse.why_stale(run, cfg, before, root=repo) is None
    src.write_text('"""Another doc."""\n\ndef f(x):\n    """Other."""\n    # a comment\n    return x + 1\n')
    (repo / "rmaat_model" / "train.log").write_text("ignored\n")
    assert reuse.why_stale(run, cfg, before, root=repo) is None and reuse.fingerprint(repo) == before
    src.write_text('"""Doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 2\n')
    assert reuse.why_stale(run, cfg, before, root=repo) == (
        f"it was trained on {rev[:7]}, and {src.relative_to(repo).as_posix()} changed since")
    assert reuse.fingerprint(repo) != before
    (run / "meta.json").write_text(json.dumps({"git_revision": "f" * 40}))
    assert "git cannot compare" in reuse.why_stale(run, cfg, before, root=repo)


def test_only_the_code_a_run_can_execute_makes_it_stale(bench, tmp_path):
    """Of the Python files, those outside the import closure of the modules that train and
    evaluate a run (and its task's data module) do not count: a changed command-line module
    leaves the run current, a changed module the training imports (also through a package's
    relative import, or inside a function) does not; an import added to a training module
    counts through that module's change; a data file always counts. In the git fallback too."""
    import json
    import subprocess
    from astro_rmaat.config import to_dict

    reuse = bench._run_reuse
    repo = tmp_path / "repo"
    M, A = "rmaat_model", "astro_rmaat"   # the scratch tree's packages
    files = {
        f"{M}/__init__.py": "",
        f"{M}/train.py": "from . import kernel\n\ndef run():\n    import rmaat_model.later as later\n    return later\n",
        f"{M}/kernel.py": "def f(x):\n    return x + 1\n",
        f"{M}/later.py": "y = 1\n",
        f"{M}/cli.py": "from rmaat_model import train\n",
        f"{M}/data/__init__.py": "",
        f"{M}/data/assoc.py": "z = 1\n",
        f"{M}/data/listops.py": "w = 1\n",
        f"{A}/workers.py": "POLL = 0.5\n",
        f"{A}/table.json": "[1, 2]\n",
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    assert reuse.read_by("assoc", repo) == {f"{M}/__init__.py", f"{M}/train.py", f"{M}/kernel.py",
                                            f"{M}/later.py", f"{M}/data/__init__.py",
                                            f"{M}/data/assoc.py"}
    assert f"{M}/data/listops.py" in reuse.read_by("listops", repo)
    assert f"{M}/data/listops.py" in reuse.read_by("no such task", repo)   # every data module
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first"],
                   cwd=repo, check=True)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    cfg = to_dict(bench.base_config(3, 1, "ltp", 0, 2, "assoc"))
    stamped, unstamped = tmp_path / "stamped", tmp_path / "unstamped"
    for run in (stamped, unstamped):
        run.mkdir()
        (run / "config.json").write_text(json.dumps(cfg))
        (run / "meta.json").write_text(json.dumps({"git_revision": rev, "versions": {}}))
    reuse.stamp(stamped, reuse.fingerprint(repo))

    def why(run):
        return reuse.why_stale(run, cfg, reuse.fingerprint(repo), root=repo)
    assert why(stamped) is None and why(unstamped) is None
    (repo / f"{M}/cli.py").write_text("from rmaat_model import train, kernel\n")
    (repo / f"{A}/workers.py").write_text("POLL = 0.25\n")
    (repo / f"{M}/data/listops.py").write_text("w = 2\n")
    assert why(stamped) is None and why(unstamped) is None      # not code an assoc run executes
    for name, text in ((f"{M}/later.py", "y = 2\n"), (f"{M}/kernel.py", "def f(x):\n    return x\n"),
                       (f"{A}/table.json", "[1, 3]\n")):
        before = (repo / name).read_text()
        (repo / name).write_text(text)
        assert name in why(stamped) and name in why(unstamped), name
        (repo / name).write_text(before)
    assert why(stamped) is None
    (repo / f"{M}/cli.py").unlink()                      # a removed file counts, whatever it was
    assert f"{M}/cli.py" in why(stamped) and f"{M}/cli.py" in why(unstamped)
    (repo / f"{M}/cli.py").write_text(files[f"{M}/cli.py"])
    (repo / f"{M}/later.py").write_text("y = (\n")          # does not parse: every file counts
    assert reuse.read_by("assoc", repo) is None    # every file counts: workers.py, listops.py, later.py
    assert why(stamped) == "it was trained by other code: astro_rmaat/workers.py and 2 more differ(s)"
    (repo / f"{M}/later.py").write_text(files[f"{M}/later.py"])
    (repo / f"{A}/workers.py").write_text(files[f"{A}/workers.py"])
    (repo / f"{M}/train.py").write_text(files[f"{M}/train.py"] + "from astro_rmaat import workers\n")
    assert f"{M}/train.py" in why(stamped) and f"{M}/train.py" in why(unstamped)
    assert f"{A}/workers.py" in reuse.read_by("assoc", repo)


@pytest.mark.slow
def test_the_benchmark_stamps_its_runs_and_stops_retrains_or_reuses_stale_ones(bench, tmp_path, capsys):
    """A fresh benchmark trains and stamps its runs (a stamp left beside a deleted folder is
    replaced), and --replot reads its results.csv back; a stale run: --stale stop (the default)
    gives one line, exit 2, nothing written or moved; --stale reuse reports it as trained, its
    stamp untouched; --stale retrain renames it and trains it again."""
    from astro_rmaat.config import to_dict

    reuse = bench._run_reuse
    code = reuse.fingerprint()
    argv = ["--grid", "3x1", "--models", "ltp", "--seeds", "1,1", "--steps", "2", "--workers", "1",
            "--out", str(tmp_path)]
    job = bench.jobs_for([(3, 1)], ("ltp",), 2, tmp_path, 1, 1)[0]
    run = Path(job["dir"])
    reuse.stamp(run, _other_code(code))                 # left beside a folder deleted by hand
    assert bench.main(argv) == 0
    assert reuse.read_stamp(run) == code and reuse.why_stale(run, to_dict(bench.job_config(job)), code) is None
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert "trained_on" in header
    row, = bench.read_results(tmp_path / "results.csv")
    assert row["pred_present"] == row["blind_acc"] == row["test_acc"]   # one fact: its value is the answer
    assert "T=3, K=1: 100.0 % (any value present: 100.0 %)" in (tmp_path / "table.md").read_text()
    assert bench.main(argv[-2:] + ["--task", "assoc", "--replot"]) == 0
    first = (tmp_path / "results.csv").read_text()

    reuse.stamp(run, _other_code(code))                 # as if trained by other code
    capsys.readouterr()
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 run under" in err and "trained by other code: rmaat_model/model.py" in err, err
    assert (tmp_path / "results.csv").read_text() == first and reuse.read_stamp(run) == _other_code(code)
    assert bench.main(argv + ["--stale", "reuse"]) == 0
    assert reuse.read_stamp(run) == _other_code(code) and not run.with_name("seed0.stale-1").exists()
    assert bench.main(argv + ["--stale", "retrain"]) == 0
    assert (run.parent / "seed0.stale-1" / "meta.json").is_file()
    assert reuse.read_stamp(run.parent / "seed0.stale-1") == _other_code(code)
    assert reuse.read_stamp(run) == code and reuse.why_stale(run, to_dict(bench.job_config(job)), code) is None


def test_the_answer_columns_of_known_answers(answers):
    """pred_present and blind_acc on four facts: the true answers are all among the values
    present, and worth the mean share of their value without the key; an answer that is no
    fact's value scores 0 on both; the most frequent value present scores the ceiling."""
    import numpy as np
    from rmaat_model.data import assoc

    tokens, labels, _ = assoc.generate(2000, 4 * 16, 16, 4, seed=4)
    counts = assoc.values_present(tokens)
    truth = answers.answer_columns(tokens, labels)
    assert truth["pred_present"] == 1.0
    assert truth["blind_acc"] == round(float(np.mean(counts[np.arange(2000), labels] / 4)), 4) < 0.6
    absent = np.argmin(counts, axis=1)                      # four facts, eight values: one is absent
    assert (counts[np.arange(2000), absent] == 0).all()
    assert answers.answer_columns(tokens, absent) == {"pred_present": 0.0, "blind_acc": 0.0}
    top = answers.answer_columns(tokens, np.argmax(counts, axis=1))
    assert top == {"pred_present": 1.0, "blind_acc": round(assoc.key_blind_accuracy(tokens)["best"], 4)}


def test_every_query_columns_of_known_answerers(answers):
    """Each test example asked about each of its facts: an answerer that ignores the key (the
    most frequent value present) changes its answer on no example, one that reads it (the task's
    own answer) wherever the facts' values differ, and scores 1 at every age; one that answers the
    oldest fact's value, ignoring the key, scores near chance on facts written last and rises
    with age to over 80 % on facts of the first segment (the shape a preference for early facts
    gives a forgetting curve); at K = 1 there is nothing else to ask."""
    import numpy as np
    import torch
    from rmaat_model.data import assoc

    class Answerer(torch.nn.Module):
        def __init__(self, rule):
            super().__init__()
            self.rule = rule

        def forward(self, tokens):
            answers = [self.rule(row) for row in tokens.numpy()]
            return torch.nn.functional.one_hot(torch.tensor(answers), assoc.N_VALUES).float()

    def most_frequent(row):
        return int(np.argmax(assoc.values_present(row[None, :])[0]))

    def oldest(row):
        return int((row[(row >= assoc.FACT_OFFSET) & (row < assoc.DISTRACTOR_OFFSET)][0] - assoc.FACT_OFFSET)
                   % assoc.N_VALUES)

    T = 8
    tokens, _, _ = assoc.generate(1200, T * 16, 16, 4, seed=2)
    _, values, _ = assoc.every_query(tokens[:answers.EVERY_QUERY_EXAMPLES], 16)
    varied = np.mean([len(set(v)) > 1 for v in values])
    assert varied > 0.99                                  # four equal values: 8 draws in 8 ** 4
    blind = answers.every_query_columns(Answerer(most_frequent), tokens, 16)
    truth = answers.every_query_columns(Answerer(assoc.answer_from_tokens), tokens, 16)
    assert blind["key_use"] == 0.0 and truth["key_use"] == round(float(varied), 4)
    assert [truth[f"every_age_{a}"] for a in range(1, T)] == [1.0] * (T - 1)
    early = answers.every_query_columns(Answerer(oldest), tokens, 16)
    curve = [early[f"every_age_{a}"] for a in range(1, T)]
    assert early["key_use"] == 0.0 and curve[-1] > 0.8 and curve[0] < 0.2
    assert all(b >= a for a, b in zip(curve, curve[1:]))
    one, _, _ = assoc.generate(50, 4 * 16, 16, 1, seed=2)
    assert answers.every_query_columns(Answerer(assoc.answer_from_tokens), one, 16) == {}


def test_the_forgetting_curves_are_over_every_fact_where_every_run_has_them(pieces):
    """The figure's curves: a setting whose rows all carry every_age columns is drawn over every
    fact, mean over a model's runs per age; one row without them sends the whole setting back
    to each example's one query."""
    rows = [dict(r, age_1=0.2, age_2=0.4, every_age_1=0.3, every_age_2=0.5 + 0.1 * r["seed"])
            for r in _rows(3, 4, "ltp", [0.3, 0.4])] + \
           [dict(r, age_1=0.1, age_2=0.1, every_age_1=0.1, every_age_2=0.1) for r in _rows(3, 4, "none", [0.1])]
    every, curves = pieces.forgetting_curves(rows)
    assert every and curves["ltp"] == ([1, 2], [0.3, pytest.approx(0.55)]) and curves["none"] == ([1, 2], [0.1, 0.1])
    del rows[-1]["every_age_1"], rows[-1]["every_age_2"]
    every, curves = pieces.forgetting_curves(rows)
    assert not every and curves["ltp"] == ([1, 2], [0.2, 0.4])


def test_the_report_states_the_key_blind_ceiling_of_each_assoc_setting(bench, pieces):
    """Below the accuracy table: what the values present without their keys score on each
    setting's test split (41.1 % at T = 16, K = 4; 100 % with one fact), the share of answers
    among the values present and the accuracy above the answers' key-blind score, where the rows
    carry them; recall rows get none of it."""
    def report(rows):
        return pieces.report(rows, bench.known_models(), bench.SEGMENT_LEN)

    rows = _rows(16, 4, "ltp", [0.3, 0.35]) + _rows(8, 1, "ltp", [0.9])
    text = report(rows)
    assert "T=8, K=1: 100.0 % (any value present: 100.0 %); T=16, K=4: 41.1 % (any value present: 31.5 %)" in text
    assert "Answers that are the value" not in text
    rows[0]["pred_present"], rows[1]["pred_present"] = 0.98, 1.0
    assert "| ltp | 99.0 ± 1.4 (n=2) |" in report(rows).split("Answers that are the value")[1]
    assert "Binding:" not in report(rows)
    rows[0]["blind_acc"], rows[1]["blind_acc"] = 0.3, 0.33                # test 0.30 and 0.35
    assert "| ltp | 1.0 ± 1.4 (n=2) |" in report(rows).split("Binding:")[1]
    assert "change when the query names" not in report(rows)
    rows[0]["key_use"], rows[1]["key_use"] = 0.9, 0.5                     # K = 1 rows carry none
    assert "| ltp | 70.0 ± 28.3 (n=2) |" in report(rows).split("change when the query names")[1]
    recall = [dict(r, task="recall") for r in _rows(16, 1, "ltp", [0.5])]
    assert report(recall) == pieces.table(recall, bench.known_models())


@needs_git
def test_settle_writes_only_when_the_benchmark_goes_on(bench, tmp_path, capsys):
    """``settle`` on runs in a scratch git repository: under stop nothing is stamped; a finished
    run judged current by git is stamped once the benchmark goes on, a stale one never; a file
    removed since the run's revision makes it stale; under reuse a finished run of another config
    is reported, an interrupted one is refused in one line; a stamp that does not read is stale."""
    import json
    from astro_rmaat.config import to_dict
    from rmaat_model.train_config import TrainConfig

    reuse = bench._run_reuse
    repo = tmp_path / "repo"
    _, table, rev = _scratch_repo(repo, "def f(x):\n    return x + 1\n")
    cfg = to_dict(TrainConfig())
    other_cfg = dict(cfg, seed=cfg["seed"] + 1)

    def run(name, finished=True, config=cfg):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(config))
        if finished:
            (d / "meta.json").write_text(json.dumps({"git_revision": rev}))
        return str(d)

    code = reuse.fingerprint(repo)
    current, stale = run("current"), run("stale")
    reuse.stamp(stale, _other_code(code))
    both = [(current, cfg), (stale, cfg)]
    capsys.readouterr()
    assert reuse.settle(both, code, "stop", tmp_path, repo) == 2
    assert capsys.readouterr().err.count("\n") == 1 and reuse.read_stamp(current) is None
    assert reuse.settle(both, code, "reuse", tmp_path, repo) is None
    assert reuse.read_stamp(current) == code and reuse.read_stamp(stale) == _other_code(code)

    table.unlink()                                      # removed since the revision
    old, now = run("old"), reuse.fingerprint(repo)
    name = table.relative_to(repo).as_posix()
    assert reuse.why_stale(old, cfg, now, repo) == f"it was trained on {rev[:7]}, and {name} changed since"
    assert reuse.settle([(old, cfg)], now, "reuse", tmp_path, repo) is None and reuse.read_stamp(old) is None
    table.write_text("[1, 2]\n")
    extra = repo / "rmaat_model" / "extra.py"          # untracked, not ignored: code git diff does not list
    extra.write_text("y = 2\n")
    assert f"{extra.relative_to(repo).as_posix()} changed since" in reuse.why_stale(old, cfg, reuse.fingerprint(repo), repo)
    extra.unlink()

    finished_other, interrupted_other = run("fin", config=other_cfg), run("intr", finished=False, config=other_cfg)
    assert reuse.settle([(finished_other, cfg)], code, "reuse", tmp_path, repo) is None
    capsys.readouterr()
    assert reuse.settle([(interrupted_other, cfg)], code, "reuse", tmp_path, repo) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be resumed" in err and "expected --stale retrain" in err, err

    for text in ("0123abcd\n", '["x"]\n'):              # a stamp that is not fingerprint()'s JSON
        bad = run(f"bad{len(text)}", finished=False)
        reuse.stamp_path(bad).write_text(text)
        assert "does not read" in reuse.why_stale(bad, cfg, code, repo)
        assert reuse.stale_runs([(bad, cfg)], code, repo)[0][0][0] == bad


def test_a_run_trained_under_another_torch_or_numpy_is_stale(bench, tmp_path):
    """The stamp names the versions of torch and numpy; a stamp from before it did, and a finished
    run without a stamp, are judged on them by the versions their meta.json records; an
    interrupted run whose stamp names none passes on its code."""
    import json
    from astro_rmaat.config import to_dict

    reuse = bench._run_reuse
    job, _ = _trained(bench, tmp_path)
    run, code, cfg = Path(job["dir"]), job["code"], to_dict(bench.job_config(job))
    assert set(code["packages"]) == {"torch", "numpy"} and reuse.read_stamp(run)["packages"] == code["packages"]
    newer = dict(code, packages=dict(code["packages"], torch="9.9.9"))
    assert reuse.why_stale(run, cfg, newer) == (f"it was trained under torch {code['packages']['torch']}, this is "
                                                f"torch 9.9.9 (the same seed gives other numbers across versions)")
    assert reuse.why_stale(run, cfg, dict(code, packages=dict(code["packages"], numpy="0.1"))).startswith(
        f"it was trained under numpy {code['packages']['numpy']}, this is numpy 0.1")
    older = _without_versions(code)
    reuse.stamp(run, older)
    assert reuse.why_stale(run, cfg, code) is None and "this is torch 9.9.9" in reuse.why_stale(run, cfg, newer)
    meta_file = run / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert meta["versions"]["torch"] == code["packages"]["torch"]   # what train() records is what is compared
    meta_file.write_text(json.dumps(dict(meta, versions=dict(meta["versions"], numpy="1.0"))))
    assert reuse.why_stale(run, cfg, code).startswith("it was trained under numpy 1.0, this is numpy")
    reuse.stamp_path(run).unlink()                     # finished before the stamps: meta.json's versions first
    assert reuse.why_stale(run, cfg, code).startswith("it was trained under numpy 1.0")
    meta_file.write_text(json.dumps(dict(meta, versions="2.0")))
    assert reuse.why_stale(run, cfg, code).startswith("its meta.json does not read: 'versions' is '2.0'")
    meta_file.unlink()                                 # interrupted, its stamp naming no versions: its code decides
    reuse.stamp(run, older)
    assert reuse.why_stale(run, cfg, newer) is None
    assert "other code" in reuse.why_stale(run, cfg, _other_code(newer))
    reuse.stamp(run, code)                             # interrupted, its stamp naming them
    assert "this is torch 9.9.9" in reuse.why_stale(run, cfg, newer)
    reuse.stamp_path(run).write_text(json.dumps(dict(code, packages=["torch"])))
    assert reuse.why_stale(run, cfg, code).startswith("its stamp ")


def test_a_finished_run_stamped_before_versions_is_judged_by_its_stamp_first(bench, tmp_path):
    """A finished run whose stamp names no versions: its stamp's code is checked before its
    meta.json is read for them, so other code is named as such even where meta.json does not read."""
    from astro_rmaat.config import to_dict

    reuse = bench._run_reuse
    job, _ = _trained(bench, tmp_path)
    run, code, cfg = Path(job["dir"]), job["code"], to_dict(bench.job_config(job))
    reuse.stamp(run, _without_versions(code))
    (run / "meta.json").write_text("[]")
    assert reuse.why_stale(run, cfg, _other_code(code)) == "it was trained by other code: rmaat_model/model.py differ(s)"
    assert reuse.why_stale(run, cfg, code).startswith("its meta.json does not read")


def test_a_resumed_run_keeps_the_stamp_of_the_code_that_started_it(bench, tmp_path):
    """run_one stamps a fresh start only: an interrupted run resumed (as under --stale reuse) keeps
    its stamp, so the next benchmark still sees it as started by other code."""
    from rmaat_model.train import train

    reuse = bench._run_reuse
    job = bench.jobs_for([(3, 1)], ("ltp",), 2, tmp_path, 1, 1)[0]
    train(bench.job_config(job), job["dir"], stop_after=1, progress=False)   # interrupted after one step
    other = _other_code(reuse.fingerprint())
    reuse.stamp(job["dir"], other)
    job["code"] = reuse.fingerprint()
    bench.run_one(job)
    assert (Path(job["dir"]) / "meta.json").is_file() and reuse.read_stamp(job["dir"]) == other


def test_merge_tabulates_the_runs_of_earlier_invocations_beside_this_ones(bench, tmp_path, capsys):
    """results.csv holds one invocation's runs; --merge adds those of the results.csv already
    under --out, reused (not retrained: same accuracies, same stamps), one row per run (an
    elastic run's two samplings stay two rows of one run). A row whose run is gone, or that ran
    at another budget, is one line and exit 2 with nothing written; --merge with --replot too."""
    import csv

    argv = ["--grid", "3x1", "--seeds", "1,1", "--steps", "2", "--workers", "1", "--out", str(tmp_path)]
    results = tmp_path / "results.csv"

    def table():
        with open(results, newline="") as fh:
            return {(r["model"], r["seed"]): r["test_acc"] for r in csv.DictReader(fh)}

    assert bench.main(argv + ["--models", "ltp"]) == 0
    first = table()
    assert set(first) == {("ltp", "0")}
    assert bench.main(argv + ["--models", "elastic"]) == 0
    assert set(table()) == {("elastic", "0"), ("elastic@recent", "0")}       # without --merge: this one's runs
    elastic = table()
    ltp_stamp = bench._run_reuse.stamp_path(bench.jobs_for([(3, 1)], ("ltp",), 2, tmp_path, 1, 1)[0]["dir"])
    stamp = ltp_stamp.read_text()
    capsys.readouterr()
    assert bench.main(argv + ["--models", "ltp", "--merge"]) == 0
    assert "1 run (and 1 run of the earlier results.csv, finished)," in capsys.readouterr().out
    assert table() == {**first, **elastic}
    assert "| elastic@recent |" in (tmp_path / "table.md").read_text()
    again = results.read_text()
    assert bench.main(argv + ["--models", "ltp", "--merge"]) == 0              # merging is idempotent
    assert results.read_text() == again
    assert ltp_stamp.read_text() == stamp

    for extra, expected in [(["--steps", "3"], "elastic seed 0 ran on assoc for 2 steps"),
                            (["--replot"], "--merge with --replot")]:
        capsys.readouterr()
        assert bench.main(argv + ["--models", "ltp", "--merge"] + extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err
        assert results.read_text() == again
    gone = Path(bench.jobs_for([(3, 1)], ("elastic",), 2, tmp_path, 1, 1)[0]["dir"])
    shutil.rmtree(gone)
    capsys.readouterr()
    assert bench.main(argv + ["--models", "ltp", "--merge"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no finished run at" in err and "elastic seed 0" in err, err
    assert results.read_text() == again and not gone.exists()


@pytest.mark.parametrize("text, expected", [
    ("task,T,K,model,seed,steps\nassoc,8,4,ltp,zero,3000\n", "is not a results.csv this benchmark wrote"),
    ("task,T,K,seed,steps\nassoc,8,4,0,3000\n", "line 2: expected task, T, K, model, seed and steps"),
    ("task,T,K,model,seed,steps\nassoc,8,4,nope,0,3000\n", "line 2: model 'nope'; expected one of"),
    # a run at another peak rate is another size: its row is refused before its folder is looked for
    ("task,T,K,model,seed,steps,lr\nassoc,8,4,ltp,0,3000,0.001\n",
     "ltp seed 0 ran on assoc for 3000 steps at 1 block, d_model 32, 4 memory tokens, lr 0.001 after 20 warm-up "
     "steps, retention lr 0.1; expected this invocation's assoc, 3000 steps and 1 block, d_model 32, 4 memory "
     "tokens, lr 0.005 after 20 warm-up steps"),
    # and so is another warm-up
    ("task,T,K,model,seed,steps,lr,warmup\nassoc,8,4,ltp,0,3000,0.005,1000\n",
     "ltp seed 0 ran on assoc for 3000 steps at 1 block, d_model 32, 4 memory tokens, lr 0.005 after 1000 warm-up"),
])
def test_merge_refuses_a_results_csv_it_cannot_read_in_one_line(bench, tmp_path, capsys, text, expected):
    """--merge on a results.csv that names no run of this benchmark: one line, exit 2, the file
    untouched and nothing else written."""
    (tmp_path / "results.csv").write_text(text)
    argv = ["--grid", "8x4", "--models", "ltp", "--steps", "3000", "--merge", "--out", str(tmp_path)]
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--merge: " in err and expected in err, err
    assert (tmp_path / "results.csv").read_text() == text and sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]
