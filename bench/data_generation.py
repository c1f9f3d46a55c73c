"""Throughput of the local LRA generators: ListOps trees/s and Pathfinder images/s,
1 worker vs N workers, measured side by side in one run (median of --repeats).

    PYTHONPATH=. python bench/data_generation.py --listops 2000 --pathfinder 200 --workers 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from astro_rmaat.cli_args import ArgumentParser, count_int, positive_int, run_main
from rmaat_model.data.generate import listops, pathfinder


def _cpu_s() -> float:
    t = os.times()  # this process and its reaped worker processes
    return t.user + t.system + t.children_user + t.children_system


def _median_rate(fn, n: int, repeats: int) -> tuple[float, float]:
    """Median items per wall-clock second and per CPU second (robust to a busy machine)."""
    rates, cpu_rates = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), _cpu_s()
        fn()
        rates.append(n / (time.perf_counter() - t0))
        cpu_rates.append(n / max(_cpu_s() - c0, 1e-9))
    return statistics.median(rates), statistics.median(cpu_rates)


def marker_distance_auc(resolution: int, n: int, seed: int = 123) -> tuple[float, float]:
    """Fraction of positives and the AUC of "markers closer -> label 1" over n scenes.

    0.5 means the marker distance alone tells nothing about the label (no shortcut).
    """
    import numpy as np
    scenes = [pathfinder.make_scene(pathfinder.image_rng(seed, i), pathfinder.SETTINGS[resolution])
              for i in range(n)]
    y = np.array([s.label for s in scenes])
    d = np.array([np.linalg.norm(s.markers[0] - s.markers[1]) for s in scenes])
    pos, neg = d[y == 1], d[y == 0]
    auc = (neg[:, None] > pos[None]).mean() + 0.5 * (neg[:, None] == pos[None]).mean()
    return float(y.mean()), float(auc)


def main() -> None:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listops", type=positive_int, default=2000, help="trees per timing")
    ap.add_argument("--pathfinder", type=positive_int, default=200, help="images per timing (32 px)")
    ap.add_argument("--workers", type=positive_int, default=2, help="processes of the parallel run")
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--cue", type=count_int, default=0,
                    help="also check the marker-distance shortcut on this many scenes")
    args = ap.parse_args()
    if args.cue:
        for res, n in ((32, args.cue), (128, max(args.cue // 3, 2))):
            frac, auc = marker_distance_auc(res, n)
            print(f"pathfinder{res}: {n} scenes, positives {frac:.3f}, "
                  f"AUC of marker distance for the label {auc:.3f} (0.5 = no shortcut)")

    import collections
    trees = listops.generate(args.listops, seed=0)
    counts = collections.Counter(t[1] for t in trees)
    label, top = counts.most_common(1)[0]
    print(f"listops: {len(trees)} trees (seed 0), majority class {label} at {top / len(trees):.1%}, "
          f"class 0 at {counts[0] / len(trees):.1%}, mean length "
          f"{sum(t[2] for t in trees) / len(trees):.0f} tokens")
    rows = []
    for w in (1, args.workers):
        rate = _median_rate(lambda: listops.generate(args.listops, seed=0, workers=w),
                            args.listops, args.repeats)
        rows.append(("listops", w, rate))
    for res, n in ((32, args.pathfinder), (128, max(args.pathfinder // 4, 1))):
        for w in (1, args.workers):
            def run(w=w, res=res, n=n) -> None:
                with tempfile.TemporaryDirectory() as tmp:
                    old = pathfinder.BATCH_SIZE
                    pathfinder.BATCH_SIZE = max(n // (2 * w), 1)  # several batches per worker
                    try:
                        pathfinder.generate_files(tmp, resolution=res, n=n, seed=0, workers=w)
                    finally:
                        pathfinder.BATCH_SIZE = old
            rows.append((f"pathfinder{res} (PNG written)", w, _median_rate(run, n, args.repeats)))
    print(f"load average (1 min) {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'generator':32s} {'workers':>7s} {'items/s':>9s} {'vs 1 worker':>11s} {'items/CPU-s':>11s}")
    base = {}
    for name, w, (rate, cpu_rate) in rows:
        base.setdefault(name, rate)
        print(f"{name:32s} {w:7d} {rate:9.1f} {rate / base[name]:10.2f}x {cpu_rate:11.1f}")


if __name__ == "__main__":
    run_main(main)
