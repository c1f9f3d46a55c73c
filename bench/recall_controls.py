"""The learning test's recall runs over several seeds: RMAAT + AMRB against its controls.

    PYTHONPATH=$PWD python bench/recall_controls.py --seeds 0 1 2 3 [--models amrb at_segment ...]

Uses the exact configs of tests/rmaat_model/test_learning.py (imported from there, with its
exponential retention fixture): 4 segments of 16 tokens, d_model 32, 1 layer, 400 steps.
Models: ``amrb`` (RMAAT, learned retention, AMRB), ``at_segment`` (AT, at_scope="segment":
each segment alone, no memory), ``at_sequence`` (the paper's AT over the whole sequence),
``tbptt1`` (RMAAT trained with truncated BPTT(1)). Prints the test accuracy of each run's
best-on-validation checkpoint and its wall time; one intra-op thread. Nothing is asserted.
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
from model_fixtures import write_retention  # noqa: E402
from test_learning import CHANCE, recall_config  # noqa: E402

from astro_rmaat.cli_args import ArgumentParser  # noqa: E402
from rmaat_model.train import RESULTS_FILE, train  # noqa: E402

MODELS = ("amrb", "at_segment", "at_sequence", "tbptt1")


def config(name: str, ret: Path, seed: int):
    if name == "tbptt1":
        return recall_config(ret, "tbptt", k=1, seed=seed)
    cfg = recall_config(ret, "amrb", seed=seed)
    if name == "amrb":
        return cfg
    scope = name.removeprefix("at_")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, arch="at", at_scope=scope,
                                                              retention="none"))


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"chance = {CHANCE:.3f}")
    print("| model | seed | test acc % | wall s |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        ret = write_retention(Path(tmp) / "retention.json")
        for name in args.models:
            for seed in args.seeds:
                t0 = time.perf_counter()
                run = train(config(name, ret, seed), Path(tmp) / f"{name}-{seed}", progress=False)
                acc = json.loads((run / RESULTS_FILE).read_text())["test_acc"]
                print(f"| {name} | {seed} | {100 * acc:.1f} | {time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    main()
