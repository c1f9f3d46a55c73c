"""How long distill takes to fit one curve: per model, all candidates, and 100 curves.

Run:  PYTHONPATH=$PWD python bench/fit_speed.py [--repeats 7] [--curves 100]

Prints medians over ``--repeats`` runs, measured side by side in one process:
  * per model: ms per fit with one start (lmfit, least_squares), the same fit with
    ``scipy.optimize.curve_fit`` (trf, same bounds) and their ratio (the lmfit overhead);
  * per curve: all default candidates with the default FitConfig.n_starts (ms per curve and
    per curve per model), and the same for ``--curves`` curves in a row.
Goal (issue 4): well under 50 ms per curve per model.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from astro_rmaat.cli_args import ArgumentParser, positive_int, run_main
from distill import engine, fitting, models


def synthetic_curves(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    t = np.arange(41.0)
    truths = {"exp": dict(p0=0.0, p_inf=0.5, tau=8.0),
              "hill": dict(p0=0.0, p_inf=0.6, t_half=10.0, n=2.0),
              "double_exp": dict(p0=0.0, p_inf=1.0, tau_fast=1.5, tau_slow=15.0, w=0.5),
              "power": dict(p0=0.0, p_inf=1.0, tau=10.0, alpha=3.0)}
    names = list(truths)
    out = []
    for i in range(n):
        name = names[i % len(names)]
        tr = truths[name]
        y = models.evaluate(name, t, tr) + rng.normal(0, 0.01 * (tr["p_inf"] - tr["p0"]), t.size)
        out.append((t, y, name))
    return out


def time_it(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def scipy_fit(name, t, y):
    from scipy.optimize import curve_fit

    m = models.get_model(name)
    b = m.bounds(t, y)
    g = m.guess(t, y, np.random.default_rng(0))
    lo = [b[p][0] for p in m.param_names]; hi = [b[p][1] for p in m.param_names]
    p0 = [float(np.clip(g[p], lo[i] + 1e-3 * (hi[i] - lo[i]), hi[i] - 1e-3 * (hi[i] - lo[i])))
          for i, p in enumerate(m.param_names)]
    return curve_fit(lambda tt, *a: m.func(tt, *a), t, y, p0=p0, bounds=(lo, hi), method="trf")


def main() -> None:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=positive_int, default=7)
    ap.add_argument("--curves", type=positive_int, default=100)
    args = ap.parse_args()
    cfg = fitting.FitConfig()
    curves = synthetic_curves(max(args.curves, 4))
    t, y, _ = curves[0]
    engine.fit_candidates(t, y, cfg.models, n_starts=1)      # warm imports
    print(f"one curve: 41 points; candidates {', '.join(cfg.models)}; median of {args.repeats} runs\n")
    print(f"{'model':<11} {'lmfit 1 start':>14} {'curve_fit':>10} {'ratio':>6} "
          f"{f'lmfit {cfg.n_starts} starts':>15}   (ms per fit)")
    for i, name in enumerate(cfg.models):
        t, y, _ = curves[i]
        a = time_it(lambda: engine.fit_model(name, t, y, n_starts=1, with_report=False), args.repeats)
        b = time_it(lambda: scipy_fit(name, t, y), args.repeats)
        c = time_it(lambda: engine.fit_model(name, t, y, n_starts=cfg.n_starts, with_report=False),
                    args.repeats)
        print(f"{name:<11} {a * 1e3:>14.2f} {b * 1e3:>10.2f} {a / b:>6.2f} {c * 1e3:>15.2f}")
    k = len(cfg.models)
    one = time_it(lambda: engine.fit_candidates(t, y, cfg.models, n_starts=cfg.n_starts), args.repeats)
    print(f"\nall {k} candidates x {cfg.n_starts} starts, one curve: {one * 1e3:.1f} ms "
          f"({one * 1e3 / k:.1f} ms per curve per model)")
    few = time_it(lambda: engine.fit_candidates(t, y, cfg.models, n_starts=1, with_report=False),
                  args.repeats)
    print(f"all {k} candidates x 1 start, one curve:  {few * 1e3:.1f} ms "
          f"({few * 1e3 / k:.1f} ms per curve per model)")
    batch = curves[: args.curves]

    def run_batch():
        for tt, yy, _ in batch:
            engine.fit_candidates(tt, yy, cfg.models, n_starts=cfg.n_starts, with_report=False)
    reps = max(1, min(3, args.repeats))
    many = time_it(run_batch, reps)
    print(f"{len(batch)} curves, all candidates x {cfg.n_starts} starts: {many:.2f} s "
          f"({many * 1e3 / len(batch):.1f} ms per curve, {many * 1e3 / len(batch) / k:.1f} ms per "
          f"curve per model; median of {reps})")


if __name__ == "__main__":
    run_main(main)
