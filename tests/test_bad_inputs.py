"""Every bad input tried, in every verb: one line on stderr, exit status 2, nothing written.

The cases below are also the table in docs/bad_inputs.md: the last test renders the table
from the messages the CLI actually printed and checks the file against it. After changing
a message, regenerate the file with

    RMAAT_WRITE_DOCS=1 python -m pytest tests/test_bad_inputs.py
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rmaat_app.cli import main

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad_inputs.md"
SAMPLES = "astro_rmaat/data/retention/default_samples.parquet"
TRAIN = ["train", "--quiet", "--set", "steps=2", "--set", "device=\"cpu\""]

#: (verb, arguments with {tmp} for the scratch folder and {listops} for generated data,
#:  a piece of the expected message). Every case writes to {tmp}/out, which must not appear.
CASES = [
    ("simulate", ["--set", "protocol.n_cycles=0"], "protocol.n_cycles = 0"),
    ("simulate", ["--set", "params.tau_pl_s=-10"], "expected a finite positive number s"),
    ("simulate", ["--set", "params.tau_nn_ms=3"], "unknown parameter 'params.tau_nn_ms'"),
    ("simulate", ["--config", "{tmp}/missing.json"], "does not exist"),
    ("simulate", ["--config", "/dev/null"], "'/dev/null' is not a regular file; expected a JSON file"),
    ("simulate", ["--out", "{tmp}/falling.parquet/run"], "is not a directory"),
    ("simulate", ["--set", "seed=4294967296"], "seed = 4294967296: expected an integer from 0 to 4294967295"),
    ("simulate", ["--set", "geometry.n_pre=1000000"], "3,000,000 synapses coupled in 8,999,997,000,000 pairs"),
    ("simulate", ["--model", "tripartite", "--set", "n_units=100000000"], "spike tables of 819,400,000,000 times"),
    ("simulate", ["--model", "tripartite", "--set", "protocol.kind=\"explicit\"",
                  "--set", "protocol.pre_times_s=[0.5, 5.0]", "--set", "protocol.explicit_duration_s=1.0"],
     "is outside the run"),
    ("sweep", ["--grid", "params.nope=1,2"], "grid key 'params.nope'"),
    ("sweep", ["--grid", "params.U_0_star=0.3", "--executor", "processes", "--workers", "0"],
     "workers = 0"),
    ("sweep", ["--grid", "params.U_0_star=0.3", "--executor", "dask", "--workers", "100000"],
     "workers = 100000: more than 4 worker processes per core"),
    ("generate pathfinder", ["--workers", "100000"], "workers = 100000: more than 4 worker processes per core"),
    ("fit", ["{tmp}/missing.parquet"], "does not exist"),
    ("fit", ["/dev/null"], "'/dev/null' is neither a directory nor a regular file"),
    ("fit", ["{tmp}/falling.parquet"], "the trace falls"),
    ("fit", ["{tmp}/string_element.parquet"], "column 'element' has dtype"),
    ("fit", [SAMPLES, "--models", "exp,nope"], "nope"),
    ("fit", [SAMPLES, "--set", "n_starts=0"], "n_starts"),
    ("fit", [SAMPLES, "--seed", "-1"], "seed = -1: expected an integer from 0"),
    ("fit", [SAMPLES, "--set", "band_samples=1000000000000"], "the band's 1,000,000,000,000 curves of 1,025"),
    ("sensitivity", ["{tmp}"], "sweep"),
    ("generate listops", ["--workers", "0"], "workers = 0"),
    ("generate listops", ["--n-train", "0", "--n-val", "0", "--n-test", "0"], "nothing to generate"),
    ("generate pathfinder", ["--n", "0"], "n = 0"),
    ("generate listops", ["--seed", "-1"], "seed = -1: expected an integer from 0"),
    ("generate pathfinder", ["--n", "100000000000"], "100,000,000,000 PNG images take at least 5,700.0 GB"),
    ("train", ["--task", "text"], "data_dir, which is not set"),
    ("train", ["--task", "recall", "--set", "batch_size=0"], "batch_size = 0"),
    ("train", ["--task", "recall", "--set", "num_workers=100000"], "num_workers = 100000: more than 4 DataLoader"),
    ("train", ["--task", "recall", "--set", "seed=99999999999999999999"],
     "seed = 99999999999999999999: expected an integer from 0"),
    ("train", ["--task", "listops", "--data", "{tmp}/nowhere"], "nowhere"),
    ("train", ["--task", "listops", "--data", "{listops}", "--set", "model.max_len=512"],
     "model.max_len = 512"),
    ("train", ["--task", "listops", "--data", "{listops}", "--set", "max_len=8"], "would be cut"),
    ("train", ["--task", "recall", "--set", "ckpt_minutes=0"], "ckpt_minutes = 0"),
    ("train", ["--task", "recall", "--set", "model.arch=\"nope\""], "arch = 'nope'"),
    ("train", ["--task", "assoc", "--set", "max_len=100000000"], "take 8,392.3 GiB as int64"),
    ("train", ["--task", "recall", "--set", "model.d_model=1000000"],
     "the largest tensor is blocks.0.attn.qkv.weight (3000000, 1000000)"),
    ("train", ["--task", "recall", "--set", "amrb_overlap=true"], "amrb_overlap = true needs threads >= 2"),
    ("train", ["--task", "recall", "--set", "amrb_overlap=true", "--set", "threads=2", "--set",
               "model.arch=\"transformer\""], "model.arch = 'transformer' runs each sequence in one pass"),
    ("train", ["--task", "recall", "--set", "shards=64"], "shards = 64 is more than batch_size = 32"),
    ("pipeline", ["--models", "rmaat,foo"], "unknown model 'foo'"),
    ("pipeline", ["--set", "n_train=0"], "n_train = 0"),
    ("pipeline", ["--set", "n_train=8000"], "task 'recall' makes its own"),
    ("pipeline", ["--task", "listops", "--set", "n_train=1000000000000"], "GB free at '<tmp>'"),
    ("generate listops", ["--n-train", "100000000000"], "100,000,004,000 trees of more than 500 tokens"),
    # click's own parse errors, which it would print as a usage block, a hint and the message
    ("train", ["--task", "recall", "--steps", "abc"], "rmaat train: Invalid value for '--steps': 'abc' is not a valid integer"),
    ("train", ["--task", "recall", "--nope"], "rmaat train: No such option '--nope'"),
    ("train", ["--task", "recall", "--out", "{tmp}/out", "--set"], "rmaat train: Option '--set' requires an argument"),
    ("generate listops", ["--workers", "x"], "rmaat generate listops: Invalid value for '--workers'"),
    ("generate listops", ["--out", "{tmp}/out", "--workers"],
     "rmaat generate listops: Option '--workers' requires an argument"),
    ("fit", [], "rmaat fit: TRACES"),
    ("pipeline", ["--quick", "extra"], "rmaat pipeline: Got unexpected extra argument (extra)"),
    ("nope", [], "rmaat: No such command 'nope'"),
]

#: the same, with an environment variable set: (variables, verb, arguments, expected piece)
ENV_CASES = [
    ({"RMAAT_MALLOC_TUNING": "yes"}, "train", ["--task", "recall"], "RMAAT_MALLOC_TUNING = 'yes'"),
    ({"RMAAT_NATIVE": "fast"}, "train", ["--task", "recall"], "RMAAT_NATIVE='fast': expected 0"),
]
#: every case as (variables, verb, arguments, expected piece)
ALL_CASES = [({}, *c) for c in CASES] + ENV_CASES


def _verb_argv(verb: str, args: list[str], tmp: Path, listops: Path) -> list[str]:
    filled = [a.replace("{tmp}", str(tmp)).replace("{listops}", str(listops)) for a in args]
    head = verb.split()
    if verb == "train":
        head = TRAIN
    return [*head, *filled, *([] if "--out" in args else ["--out", str(tmp / "out")])]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Scratch inputs: a falling trace, a trace with a string element column, tiny ListOps."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from astro_rmaat.traces import META_KEY
    from distill import synthetic
    from rmaat_model.data.generate.listops import generate_files

    root = tmp_path_factory.mktemp("inputs")
    synthetic.write_samples(root / "falling.parquet", "exp", dict(p0=1.0, p_inf=0.4, tau=8.0),
                            noise=0.005)
    t = np.arange(0.0, 20.0)
    df = pd.DataFrame({"t_s": t, "variable": "p_l", "element": "0",
                       "value": 1 - np.exp(-t / 5), "unit": "1"})
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {"schema": "rmaat.traces/v1", "model": "rmaat_network", "tau_cycle_s": 1.0}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           META_KEY: json.dumps(meta).encode()})
    pq.write_table(table, root / "string_element.parquet")
    listops = root / "listops"
    generate_files(listops, n_train=8, n_val=4, n_test=4, seed=0)
    return root, listops


def run_case(verb, args, inputs, tmp_path, capsys) -> tuple[int, str]:
    root, listops = inputs
    for name in ("falling.parquet", "string_element.parquet"):
        (tmp_path / name).write_bytes((root / name).read_bytes())
    os.chdir(REPO)
    with pytest.raises(SystemExit) as exc:
        main(_verb_argv(verb, args, tmp_path, listops))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert not (tmp_path / "out").exists(), f"{verb} {args} left {tmp_path / 'out'} behind"
    line = err[0].replace(str(tmp_path), "<tmp>").replace(str(listops), "<listops>")
    line = re.sub(r"the [\d.,]+ GiB of memory", "the <M> GiB of memory", line)
    line = re.sub(r"the \d+ this process may run on; expected at most \d+",
                  "the <C> this process may run on; expected at most 4 <C>", line)
    return exc.value.code, re.sub(r"the [\d.,]+ GB free", "the <F> GB free", line)


@pytest.mark.parametrize("env, verb, args, needle", ALL_CASES,
                         ids=[f"{'env' if c[0] else c[1]}-{i}" for i, c in enumerate(ALL_CASES)])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(env, verb, args, needle, inputs, tmp_path, capsys,
                                                         monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, line = run_case(verb, args, inputs, tmp_path, capsys)
    assert code == 2 and line.startswith("error: ") and needle in line, line


def render(rows: list[tuple[str, list[str], int, str]]) -> str:
    out = ["# Bad inputs and what they get",
           "",
           "Every row is a case of `tests/test_bad_inputs.py` (unwritable, full and busy output",
           "locations are in `tests/test_faults.py`). Each gives one line on stderr and exit",
           "status 2, and writes nothing. `<tmp>` stands for a scratch folder, `<listops>` for a",
           "tiny generated ListOps, `<M>` for the machine's memory, `<F>` for the disk's free",
           "space and `<C>` for the cores; each command also has",
           "`--out <tmp>/out`. Regenerate with",
           "`RMAAT_WRITE_DOCS=1 python -m pytest tests/test_bad_inputs.py`.",
           "",
           "| command | exit | message |",
           "|---|---|---|"]
    for prefix, argv, code, line in rows:
        cmd = " ".join([*([prefix] if prefix else []), "rmaat", *argv]).replace("|", "\\|")
        out.append(f"| `{cmd}` | {code} | {line.removeprefix('error: ').replace('|', '/')} |")
    return "\n".join(out) + "\n"


def test_docs_table_matches_the_messages(inputs, tmp_path, capsys, monkeypatch):
    rows = []
    for i, (env, verb, args, _) in enumerate(ALL_CASES):
        case_dir = tmp_path / f"c{i}"
        case_dir.mkdir()
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            code, line = run_case(verb, args, inputs, case_dir, capsys)
        shown = _verb_argv(verb, args, Path("<tmp>"), Path("<listops>"))
        shown = shown if "--out" in args else shown[:-2]   # the usual --out <tmp>/out left out
        rows.append((" ".join(f"{k}={v}" for k, v in env.items()), shown, code, line))
    text = render(rows)
    if os.environ.get("RMAAT_WRITE_DOCS"):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text)
    assert DOC.is_file() and DOC.read_text() == text, \
        "docs/bad_inputs.md is out of date: RMAAT_WRITE_DOCS=1 python -m pytest tests/test_bad_inputs.py"


@pytest.mark.parametrize("argv, cls", [
    (["fit", "--show-defaults", "--models", "exp,hill"], "distill.fitting:FitConfig"),
    (["sensitivity", "--show-defaults"], "distill.sensitivity:SensitivityConfig"),
    (["sweep", "--show-defaults", "--grid", "params.U_0_star=0.3,0.6"], "astro_sim.sweep:SweepConfig"),
    (["simulate", "--show-defaults"], "astro_sim.network.model:NetworkSimConfig"),
    (["train", "--show-defaults", "--task", "recall"], "rmaat_model.train_config:TrainConfig"),
    (["pipeline", "--show-defaults"], "rmaat_app.pipeline:PipelineConfig"),
])
def test_every_config_verb_shows_its_defaults(argv, cls, capsys):
    """--show-defaults prints JSON that rebuilds the very config the command would run."""
    import importlib

    from astro_rmaat.config import from_dict, to_dict
    main(argv)
    data = json.loads(capsys.readouterr().out)
    module, name = cls.split(":")
    cfg = from_dict(getattr(importlib.import_module(module), name), data)
    assert to_dict(cfg) == data


def test_rmaat_tunes_malloc_unless_told_not_to(monkeypatch, tmp_path):
    """Every verb runs with glibc's thresholds fixed (rmaat_model.allocator) unless
    RMAAT_MALLOC_TUNING=0 (the suite itself runs with 0: tests/conftest.py)."""
    from rmaat_model import allocator
    calls = []
    monkeypatch.setattr(allocator, "tune_malloc", lambda: calls.append(1) or True)
    out = str(tmp_path / "out")
    for switch, expected in ((None, 1), ("1", 2), ("0", 2)):
        if switch is None:
            monkeypatch.delenv(allocator.ENV, raising=False)
        else:
            monkeypatch.setenv(allocator.ENV, switch)
        main(["train", "--show-defaults", "--out", out])
        assert len(calls) == expected
    assert not (tmp_path / "out").exists()
