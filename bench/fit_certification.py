"""Certified answers at scale: stderr coverage per family and the model-selection confusion matrix.

Run:  PYTHONPATH=$PWD python bench/fit_certification.py [--seeds 400] [--confusion-seeds 50]

The test suite checks the same properties with fewer seeds (tests/distill/test_fitting.py);
this prints the figures quoted in the README. 41 samples 1 s apart, Gaussian noise with sd a
fraction of the rise, one start per fit for coverage, 3 starts for selection.
"""

from __future__ import annotations

import time

import numpy as np

from astro_rmaat.cli_args import ArgumentParser, positive_int, run_main
from distill import engine, models
from distill.synthetic import CERTIFIED_PARAMS

T = np.arange(41.0)
TRUTH = CERTIFIED_PARAMS


def noisy(name, seed, noise):
    tr = TRUTH[name]
    rng = np.random.default_rng(seed)
    return models.evaluate(name, T, tr) + rng.normal(0, noise * (tr["p_inf"] - tr["p0"]), T.size)


def coverage(name, seeds, noise):
    z, flagged = [], 0
    for s in range(seeds):
        f = engine.fit_model(name, T, noisy(name, s, noise), n_starts=1, seed=s, with_report=False)
        if not f.uncertainties_ok:
            flagged += 1
            continue
        z.append([abs(f.values[p] - v) / f.stderr[p] for p, v in TRUTH[name].items()])
    z = np.array(z)
    return np.mean(z <= 1, axis=0), np.mean(z <= 2, axis=0), flagged


def confusion(seeds, noise, names=("exp", "hill", "double_exp", "power")):
    C = np.zeros((len(names), len(names)), dtype=int)
    for i, name in enumerate(names):
        for s in range(seeds):
            fits = engine.fit_candidates(T, noisy(name, 10_000 + s, noise), names, n_starts=3,
                                         seed=s, with_report=False)
            C[i, names.index(engine.select(fits).name)] += 1
    return names, C


def main() -> None:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=positive_int, default=400)
    ap.add_argument("--confusion-seeds", type=positive_int, default=50)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.005, 0.01, 0.03])
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"stderr coverage, noise 1% of the rise, {args.seeds} seeds per family "
          "(nominal: 68.3% within 1 stderr, 95.4% within 2)")
    for name in TRUTH:
        c1, c2, flagged = coverage(name, args.seeds, 0.01)
        per = ", ".join(f"{p} {a:.3f}/{b:.3f}" for p, a, b in zip(TRUTH[name], c1, c2))
        print(f"  {name:<10} 1σ/2σ: {per}   (flagged {flagged})")
    for noise in args.noise:
        names, C = confusion(args.confusion_seeds, noise)
        print(f"\nmodel selection by AICc, noise {noise:.1%} of the rise, {args.confusion_seeds} "
              "seeds per family (rows: generating family, columns: chosen)")
        print(" " * 12 + "".join(f"{n:>11}" for n in names))
        for i, n in enumerate(names):
            print(f"{n:>11} " + "".join(f"{c:>11}" for c in C[i]))
        print(f"  correct: {np.trace(C) / C.sum():.1%}")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    run_main(main)
