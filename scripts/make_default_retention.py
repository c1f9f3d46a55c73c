"""Regenerate the shipped retention schedule from the default RMAAT-network simulation.

    PYTHONPATH=$PWD python scripts/make_default_retention.py [--out astro_rmaat/data/retention] [--check]

1. ``astro_sim.simulate.simulate(load_sim_config(), tmp)`` — the default network
   (Brian2; 3 + 3 neurons, 9 synapses, default STP protocol);
2. its ``samples.parquet`` (p_l of every synapse at cycle boundaries) is copied to
   ``OUT/default_samples.parquet``;
3. ``distill.fit(FitConfig(), OUT/default_samples.parquet, tmp)`` — every default candidate,
   model choice by AICc — and its ``retention.json`` is copied to ``OUT/default.json``.

With ``--check`` nothing is written: the fresh result is compared with the shipped files
(``compare``) and the differences are printed; exit status 1 when they disagree.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from astro_rmaat.cli_args import ArgumentParser, run_main

REPO = Path(__file__).resolve().parents[1]
SAMPLES_NAME = "default_samples.parquet"
RETENTION_NAME = "default.json"
#: what "matches" means for a regenerated schedule (deterministic simulation + seeded fit)
PARAM_RTOL = 1e-5        # relative tolerance on every chosen-model parameter
CURVE_ATOL = 1e-8        # absolute tolerance on the tabulated curve (trace units)
SAMPLES_ATOL = 1e-10     # absolute tolerance on the simulated samples


def generate(out_dir: Path, work: Path) -> tuple[Path, Path]:
    """Simulate the default network and fit it; write the two shipped files into ``out_dir``."""
    from astro_rmaat.runs import atomic_path
    from astro_sim.simulate import load_sim_config, simulate
    from distill.fitting import FitConfig, fit

    sim = simulate(load_sim_config(), work / "sim")
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = out_dir / SAMPLES_NAME
    with atomic_path(samples) as tmp:
        shutil.copyfile(sim / "samples.parquet", tmp)
    # the document records the trace path: relative to the repository when inside it
    inside = samples.resolve().is_relative_to(REPO)
    with contextlib.chdir(REPO if inside else Path.cwd()):
        fit_dir = fit(FitConfig(), samples.resolve().relative_to(REPO) if inside else samples,
                      work / "fit")
    retention = out_dir / RETENTION_NAME
    with atomic_path(retention) as tmp:
        shutil.copyfile(fit_dir / "retention.json", tmp)
    return samples, retention


def compare(shipped_dir: Path, fresh_dir: Path) -> list[str]:
    """Differences between two (samples, retention) pairs beyond the stated tolerances."""
    from astro_rmaat.retention import load_retention
    from astro_rmaat.traces import read_traces

    problems = []
    a = read_traces(shipped_dir / SAMPLES_NAME); b = read_traces(fresh_dir / SAMPLES_NAME)
    if a.shape != b.shape or not np.allclose(a["value"], b["value"], rtol=0, atol=SAMPLES_ATOL):
        problems.append("simulated samples differ")
    ra = load_retention(shipped_dir / RETENTION_NAME); rb = load_retention(fresh_dir / RETENTION_NAME)
    if ra.model_name != rb.model_name:
        problems.append(f"chosen model {ra.model_name!r} != {rb.model_name!r}")
    else:
        for name, v in ra.params.items():
            if not np.isclose(v, rb.params[name], rtol=PARAM_RTOL, atol=1e-12):
                problems.append(f"parameter {name}: shipped {v!r}, regenerated {rb.params[name]!r}")
    if ra.tau_cycle_s != rb.tau_cycle_s:
        problems.append(f"tau_cycle_s {ra.tau_cycle_s} != {rb.tau_cycle_s}")
    if ra.p.shape != rb.p.shape or not np.allclose(ra.p, rb.p, rtol=0, atol=CURVE_ATOL):
        problems.append("tabulated curve differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "astro_rmaat" / "data" / "retention")
    ap.add_argument("--check", action="store_true", help="compare with the shipped files, write nothing")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="default_retention_") as tmp:
        work = Path(tmp)
        target = work / "fresh" if args.check else args.out
        samples, retention = generate(target, work)
        if args.check:
            problems = compare(args.out, target)
            print("matches the shipped files" if not problems else "\n".join(problems))
            return 1 if problems else 0
    from astro_rmaat.retention import load_retention
    r = load_retention(retention)
    print(f"wrote {samples} and {retention}: model {r.model_name}, "
          + ", ".join(f"{k} = {v:.6g}" for k, v in r.params.items())
          + f"; RF(t, 8) = {np.round(r.rf(8), 4).tolist()}")
    return 0


if __name__ == "__main__":
    run_main(main)
