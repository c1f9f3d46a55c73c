"""Forgetting curves: accuracy on ``assoc`` by the age of the fact, for every memory.

    PYTHONPATH=$PWD python bench/retention_curve.py [--quick] [--out bench/out/retention] [--workers 2]
        [--grid 8x1] [--models ltp,flat] [--seeds 10,10] [--steps 3000] [--layers 1] [--n-mem 4]
        [--d-model 32] [--lr 5e-3] [--warmup 20] [--retention-lr 0.1] [--compare ltp:flat] [--replot] [--merge] [--stale stop|retrain|reuse]

Grid (the default, full): T in {2, 4, 8, 16} segments at K = 4 facts, and K in {1, 16} at
T = 8; segments of 16 tokens. Models, all at the same sizes and steps (the learning test's
sizes: d_model 32 (``--d-model``), 2 heads, 1 block (``--layers``), d_ff twice d_model, 4 memory tokens
(``--n-mem``), AMRB, lr 5e-3 (``--lr``; 20 linear warm-up steps (``--warmup``), cosine decay to a tenth; the rate at which
post-LN blocks learn recall in 300 steps; too high for the post-LN memory on assoc with four
facts over 16 segments in 10 000 steps, which learns at 1e-3, docs/retention.md),
a learned table's own lr 0.1 (``--retention-lr``); 1000 steps on
assoc, where at 300 and 600 steps every memory model stayed at chance from T = 4 on (the full
grid's 45-minute budget; at ``--steps 3000`` most models leave the plateau at T = 8, K = 1,
docs/retention.md), 300 on recall, the learning test's budget):

    ltp            RMAAT, shipped LTP schedule, integrating reading, post-LN (the default)
    ltp-literal    RMAAT, the paper's literal reading mem = RF mem', post-LN
    stream         RMAAT, RF_inf(t) (no T), integrating;  stream-literal: the same, literal
    learned        RMAAT, table learned from the LTP start (integrating), kept in [0, 1]
    learned-free   the same, unbounded (retention_range = "free", the behaviour before the bound)
    learned-literal, learned-literal-free     the same two under the literal reading
    flat           RMAAT, RF = 1/T, integrating: the row sum of an LTP schedule without its shape
    ltp-reversed   RMAAT, RF(T-t, T) at hand-off t < T: the LTP values in reverse order (rising), integrating;
                   only when --models names it
    none           RMAAT, memory passed on unscaled
    ltp-pre, ltp-literal-pre, none-pre     the same with pre-LN blocks
    flat-pre       flat with pre-LN blocks; only when --models names it
    rmt, rlt       the paper's baselines (softmax / linear attention, no RF)
    elastic        HiPPO-LegS compressed memory (Elastic Memory), uniform sampling
    elastic-recent the same trained with recency-biased sampling points
    at-segment     memory-free control (each segment alone)
    transformer    softmax over the whole sequence (upper bound)

Seeds: 5 for ltp, ltp-literal and none, 3 for the rest. The ``elastic`` runs are also
evaluated with the other sampling set (uniform <-> recent) at test time, without retraining.

Writes, under --out: ``results.csv`` (one row per run: setting, model, seed, test accuracy,
on assoc ``pred_present``, the share of answers that are the value of one of the example's
facts, and ``blind_acc``, what the same answers would score if they ignored the queried key: the
mean over examples of (facts with the answered value) / K
(``rmaat_model.data.assoc.key_blind_score``), which the accuracy equals in expectation when an
answer depends on the example's values but not on the queried key, and exceeds only where the
answers use the key, and for K > 1, over the first 1024 test examples asked about each of
their facts, ``key_use``, the share of examples whose answer changes when the query names
another of their facts, and ``every_age_a``, the accuracy over every fact of age a; accuracy at each age, and for a learned table the RF(t, T) at each hand-off t, ``rf_t``, of the
checkpoint evaluated: the best on validation, as every accuracy of the row), ``table.md`` (mean ± sd per setting and model;
on assoc also the key-blind ceiling of each setting, what a memory of the values present without
their keys scores, ``rmaat_model.data.assoc.key_blind_accuracy``: 41.1 % at K = 4 and T = 16, so
an accuracy above it needs keys bound to values, and the tables of ``pred_present``, of the
binding, ``test_acc - blind_acc``, and of ``key_use``), ``forgetting.png``
(accuracy against age per setting, over every fact where every run of the setting has
``every_age_a``, else by the one query of each example; beside the astrocyte LTP curve and the
RF(t, T) it gives).
Finished runs are reused, so an interrupted benchmark resumes (a reused run's ``train_wall_s`` is
the elapsed time at its last evaluation, from its meta.json; empty where it recorded none), but
only runs this tree would train as they are: the same config, the same code in astro_rmaat/
and rmaat_model/ as far as a run on its task can execute it (the import closure of training,
evaluation and the task's data module) and the same torch and numpy (``_run_reuse``: each run started here is stamped
with its code, file by file, and those versions; docstrings and comments do not count; a
finished run whose stamp, or lack of one, does not name the versions is judged by those its
meta.json records; an interrupted run started before stamps existed is judged by its config
only, one stamped before they named the versions by its code). Where some are not, the
benchmark stops before anything runs and names the first; ``--stale retrain`` renames them
``<name>.stale-<k>`` and trains them again, ``--stale reuse`` reports the finished ones as
trained and resumes the interrupted ones with this code (their stamp still names the code that
started them; one whose config differs cannot be resumed, and stops the benchmark).
``trained_on`` in results.csv is each run's git revision (``+dirty`` for a modified tree). Runs
go to a pool of ``--workers`` processes with one torch thread each. A benchmark, not a test:
nothing is asserted.

``results.csv``, ``table.md`` and the figure hold the runs of one invocation. ``--merge`` adds
those of the ``results.csv`` already under ``--out`` (from earlier invocations, e.g. of other
models or seeds): each of its rows names a run folder, which must still hold a finished run;
the runs are reused as any other (the same stale checks), so the files cover both sets, one
row per run.

``--compare a:b,...`` adds, for every setting that holds both models, the two models' medians
and means over seeds and a two-sided Mann-Whitney U test of their test accuracies, and on assoc a
second line testing their binding (test_acc - blind_acc, in points) the same way (rank-based:
seeds spread widely and pile up at chance, so a t-test's normal model does not fit): the exact
distribution of U where no two accuracies tie, the normal approximation with tie correction
where some do (runs stuck at chance often give the same accuracy); the line says which.

This file is the command line, the grid and the pool. The models, their sizes and configs and
one run trained and evaluated are ``_retention_runs``; the tables, tests and figure
``_retention_report``; the answer columns ``_assoc_answers``; the reuse checks ``_run_reuse``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from astro_rmaat.cli_args import ArgumentParser, count_int, positive_int, run_main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _retention_report import comparisons, plot, read_results, report, write_results  # noqa: E402  (results.csv, tables, rank tests, figure)
import _run_reuse  # noqa: E402  (whether a finished run may be reused)
from _retention_runs import (DEFAULT_SIZES, FIVE_SEEDS, MODELS, N_MEM, RETENTION_LR, SEGMENT_LEN,  # noqa: E402
                             SIZE_FIELDS, Sizes, base_config, earlier_jobs, job_config, jobs_for, known_models,
                             run_one)  # (the models, their sizes and configs, one run)

FULL_GRID = [(2, 4), (4, 4), (8, 4), (16, 4), (8, 1), (8, 16)]     # (T, K)
QUICK_GRID = [(4, 1)]
STEPS = {"assoc": 1000, "recall": 300}            # per run, every model alike
QUICK_STEPS = {"assoc": 1000, "recall": 150}

#: controls that run only when ``--models`` names them (the full grid's time was set without them)
NAMED_ONLY = ("ltp-reversed", "flat-pre")
QUICK_MODELS = ("ltp", "ltp-literal", "none", "at-segment")


def parse_args(argv) -> argparse.Namespace | int:
    """The command line, checked whole before anything is written: the namespace with grid,
    steps, seeds, models, pairs and out resolved, or 2 after one line on stderr."""
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=("assoc", "recall"), default="assoc",
                    help="assoc: the grid below; recall: the answer in segment 1 of 2..16 segments "
                         "(age = segments - 1), one setting")
    ap.add_argument("--seeds", default=None, help="seeds as N5,N3 (default 5,3; quick 1,1)")
    ap.add_argument("--quick", action="store_true",
                    help="T=4, K=1 (recall: 4 segments), 4 models, 1 seed; assoc 1000 steps, recall 150 "
                         "(under a minute on 2 cores)")
    ap.add_argument("--out", type=Path, default=None, help="default bench/out/retention[-quick]")
    ap.add_argument("--workers", type=positive_int, default=2, help="processes, one torch thread each")
    ap.add_argument("--steps", type=positive_int, default=None, help="optimiser steps per run (default: assoc 1000, recall 300; quick: assoc 1000, recall 150)")
    ap.add_argument("--models", default=None, help="comma-separated subset of: " + ", ".join(MODELS))
    ap.add_argument("--layers", type=positive_int, default=DEFAULT_SIZES.layers,
                    help=f"blocks of every model (default {DEFAULT_SIZES.layers})")
    ap.add_argument("--n-mem", type=positive_int, default=N_MEM, help=f"memory tokens of every memory model (default {N_MEM})")
    ap.add_argument("--d-model", type=positive_int, default=DEFAULT_SIZES.d_model,
                    help=f"residual width of every model, 2 heads, d_ff twice it (default {DEFAULT_SIZES.d_model})")
    ap.add_argument("--retention-lr", type=float, default=RETENTION_LR,
                    help=f"learning rate of a learned retention table (default {RETENTION_LR:g})")
    ap.add_argument("--lr", type=float, default=DEFAULT_SIZES.lr,
                    help=f"peak learning rate of every model (default {DEFAULT_SIZES.lr:g})")
    ap.add_argument("--warmup", type=count_int, default=DEFAULT_SIZES.warmup,
                    help=f"optimiser steps of linear warm-up to the peak rate (default {DEFAULT_SIZES.warmup})")
    ap.add_argument("--grid", default=None, help="settings as TxK,... e.g. 4x1,8x4 (default: the full grid)")
    ap.add_argument("--compare", default=None,
                    help="model pairs as a:b,... e.g. ltp:flat,ltp:none: medians and a Mann-Whitney U test per setting")
    ap.add_argument("--replot", action="store_true", help="redraw forgetting.png and print the table (and --compare) from results.csv")
    ap.add_argument("--merge", action="store_true",
                    help="also tabulate the runs listed in --out's results.csv from earlier invocations (each must "
                         "still be a finished run; reused, and judged stale, as any other)")
    ap.add_argument("--stale", choices=("stop", "retrain", "reuse"), default="stop",
                    help="a run under --out (finished or interrupted) that this tree would not train as it is (another config, "
                         "other code in astro_rmaat/ or rmaat_model/, or another torch or numpy): stop before anything runs "
                         "(default), retrain it (the old folder renamed <name>.stale-<k>), or reuse it (a finished run "
                         "as trained, an interrupted one resumed with this code unless its config differs)")
    args = ap.parse_args(argv)

    def bad(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    # the counts are positive (or, --warmup, >= 0) by their argparse types
    if args.d_model < 2 or args.d_model % 2:
        return bad(f"--d-model {args.d_model}: expected an even width of at least 2 (2 heads)")
    for flag, rate in (("--retention-lr", args.retention_lr), ("--lr", args.lr)):
        if not (math.isfinite(rate) and rate > 0):
            return bad(f"{flag} {rate:g}: expected a finite positive learning rate")
    args.sizes = Sizes(**{name: getattr(args, name) for name in SIZE_FIELDS})
    models = (tuple(m for m in MODELS if m not in NAMED_ONLY) if args.models is None
              else tuple(m.strip() for m in args.models.split(",")))
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        return bad(f"--models: unknown model {unknown[0]!r}; expected some of {', '.join(MODELS)}")
    pairs: list[tuple[str, str]] = []
    if args.compare is not None:
        for item in args.compare.split(","):
            names = tuple(n.strip() for n in item.split(":"))
            if len(names) != 2 or not all(names):
                return bad(f"--compare {args.compare!r}: expected model pairs a:b separated by commas, e.g. ltp:flat,ltp:none")
            wrong = [n for n in names if n not in known_models()]
            if wrong:
                return bad(f"--compare: unknown model {wrong[0]!r}; expected some of {', '.join(known_models())}")
            pairs.append(names)   # type: ignore[arg-type]
    if args.quick:
        grid, steps, seeds = QUICK_GRID, QUICK_STEPS[args.task], (1, 1)
        models = QUICK_MODELS if args.models is None else models
    else:
        grid, steps, seeds = FULL_GRID, STEPS[args.task], (5, 3)
    if args.steps is not None:
        steps = args.steps
    if args.task == "recall":
        grid = [(4 if args.quick else 16, 1)]
    if args.grid:
        try:
            grid = [tuple(int(v) for v in item.split("x")) for item in args.grid.split(",")]
            if any(len(g) != 2 for g in grid):
                raise ValueError
        except ValueError:
            return bad(f"--grid {args.grid!r}: expected settings TxK separated by commas, e.g. 4x1,8x4")
    if args.seeds:
        try:
            seeds = tuple(int(x) for x in args.seeds.split(","))
            if len(seeds) != 2 or min(seeds) < 1:
                raise ValueError
        except ValueError:
            return bad(f"--seeds {args.seeds!r}: expected two positive counts N5,N3 (seeds for "
                       f"{', '.join(FIVE_SEEDS)}, and for the other models), e.g. 5,3")
    if not args.replot:   # every setting must make a valid run, before a file is written
        from astro_rmaat.errors import ConfigError
        for T, K in grid:
            for model in models:
                try:
                    base_config(T, K, model, 0, steps, args.task, args.sizes.for_model(model))
                except ConfigError as e:
                    return bad(f"--grid {T}x{K} ({args.task}, {model}): {e}")
    out = args.out or Path("bench/out") / (f"retention-{args.task}" + ("-quick" if args.quick else ""))
    if args.replot and not (out / "results.csv").is_file():
        return bad(f"--replot: {out / 'results.csv'} not found; expected the results of an earlier run under --out")
    if args.merge and args.replot:
        return bad("--merge with --replot: --replot draws every row of results.csv already; expected one of the two")
    args.earlier = []
    if args.merge:
        try:
            args.earlier = earlier_jobs(out, args.task, steps, args.sizes)
        except ValueError as e:
            return bad(f"--merge: {e}")
    args.grid, args.steps, args.seeds, args.models, args.pairs, args.out = grid, steps, seeds, models, pairs, out
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if isinstance(args, int):
        return args
    grid, steps, seeds, models, pairs, out = args.grid, args.steps, args.seeds, args.models, args.pairs, args.out
    if args.replot:
        rows = read_results(out / "results.csv")
        plot(out / "forgetting.png", rows)
        print(report(rows, known_models(), SEGMENT_LEN))
        if pairs:
            print(comparisons(rows, pairs))
        return 0
    jobs = jobs_for(grid, models, steps, out, *seeds, task=args.task, sizes=args.sizes)
    named = {job["dir"] for job in jobs}
    earlier = [job for job in args.earlier if job["dir"] not in named]
    jobs = sorted(jobs + earlier, key=lambda j: -j["T"])   # the longest sequences first: the pool's tail is short
    from astro_rmaat.config import to_dict
    code = _run_reuse.fingerprint()
    if _run_reuse.settle([(job["dir"], to_dict(job_config(job))) for job in jobs], code, args.stale, out) is not None:
        return 2
    for job in jobs:
        job["code"] = code
    out.mkdir(parents=True, exist_ok=True)
    sizes = args.sizes.describe()
    plural = lambda n: f"{n} run" + ("s" if n != 1 else "")   # noqa: E731
    merged = f" (and {plural(len(earlier))} of the earlier results.csv, finished)" if earlier else ""
    print(f"retention benchmark on {args.task}: {plural(len(jobs) - len(earlier))}{merged}, grid (T, K) = {grid}, {steps} steps, {sizes}, models: "
          f"{', '.join(models)}; {args.workers} worker(s) x 1 thread; out {out}", flush=True)
    t0 = time.perf_counter()
    rows = []
    import multiprocessing as mp
    from astro_rmaat.workers import exit_with_parent   # a worker ends with this process, not after its run
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=mp.get_context("spawn"),
                             initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
        for i, res in enumerate(pool.map(run_one, jobs), 1):
            rows.extend(res["rows"])
            r = res["rows"][0]
            print(f"  [{i}/{len(jobs)}] T={r['T']} K={r['K']} {r['model']} seed {r['seed']}: "
                  f"test {100 * r['test_acc']:.1f} %", flush=True)
    write_results(out / "results.csv", rows, SIZE_FIELDS)
    text = report(rows, known_models(), SEGMENT_LEN)
    header = (f"{args.task} test accuracy, % (mean ± sd over seeds; chance 12.5 %); {steps} steps each, "
              f"{sizes}; "
              f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
              f"wall {time.perf_counter() - t0:.0f} s\n\n")
    if pairs:
        text += "\n" + comparisons(rows, pairs)
    tmp = out / "table.md.tmp"
    tmp.write_text(header + text)
    os.replace(tmp, out / "table.md")
    plot(out / "forgetting.png", rows)
    print()
    print(header + text)
    print(f"wrote {out / 'results.csv'}, {out / 'table.md'}, {out / 'forgetting.png'}")
    return 0


if __name__ == "__main__":
    run_main(main)
