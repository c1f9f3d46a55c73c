"""The learning test's recall runs over several seeds: RMAAT + AMRB against its controls.

    PYTHONPATH=$PWD python bench/recall_controls.py --seeds 0 1 2 3 [--models amrb at_segment ...] [--steps 500]

Uses the exact configs of tests/rmaat_model/test_learning.py (``recall_config``, imported from
there): recall across 16 segments of 16 tokens, d_model 32, 1 layer, 4 memory tokens, the
shipped schedule read the default way (post-LN, integrating), 500 steps unless ``--steps``.
Models: ``amrb`` (RMAAT, AMRB), ``at_segment`` (AT, at_scope="segment": each segment alone,
no memory), ``at_sequence`` (the paper's AT over the whole sequence), ``tbptt1`` (RMAAT trained
with truncated BPTT(1)). Prints the test accuracy of each run's best-on-validation checkpoint
and its wall time; one intra-op thread. Nothing is asserted.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "rmaat_model"))
from test_learning import CHANCE, recall_config  # noqa: E402

from astro_rmaat.cli_args import ArgumentParser, count_int, positive_int, run_main  # noqa: E402
from rmaat_model.train import RESULTS_FILE, train  # noqa: E402

MODELS = ("amrb", "at_segment", "at_sequence", "tbptt1")


def config(name: str, seed: int, steps: int):
    if name == "tbptt1":
        cfg = recall_config("tbptt", k=1, seed=seed)
    else:
        cfg = recall_config("amrb", seed=seed)
        if name != "amrb":
            scope = name.removeprefix("at_")
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, arch="at", at_scope=scope,
                                                                      retention="none"))
    return dataclasses.replace(cfg, steps=steps)


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=count_int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--steps", type=positive_int, default=recall_config("amrb").steps,
                    help="optimiser steps per run (default: the learning test's)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"chance = {CHANCE:.3f}; {args.steps} steps per run")
    print("| model | seed | test acc % | wall s |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for seed in args.seeds:
                t0 = time.perf_counter()
                run = train(config(name, seed, args.steps), Path(tmp) / f"{name}-{seed}", progress=False)
                acc = json.loads((run / RESULTS_FILE).read_text())["test_acc"]
                print(f"| {name} | {seed} | {100 * acc:.1f} | {time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    run_main(main)
