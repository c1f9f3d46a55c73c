"""NEST parity table: the Brian2 models of astro_sim.tripartite.nest_models against NEST's reference numbers.

Runs every case of ``astro_sim.tripartite.nest_parity.CASES`` (NEST's own test protocols) and prints, per
compared variable, the largest deviation from the numbers carried over from NEST's test suite
(``tests/astro_sim/fixtures/nest/``), the tolerance NEST's test applies, and the worst
deviation as a fraction of it. For the astrocyte it also prints both traces against a tight
SciPy solution (DOP853, rtol 1e-13), which shows whose error the residual is.

``PYTHONPATH=$PWD python bench/nest_parity.py [--target numpy|cython]``
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from astro_rmaat.cli_args import ArgumentParser, run_main

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "astro_sim" / "fixtures" / "nest"
TOLERANCE = {"rel": "rel 1e-6", "digits": "6 printed digits"}


def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="numpy", choices=("numpy", "cython"))
    args = ap.parse_args(argv)

    from astro_sim.tripartite.nest_parity import CASES, compare
    from astro_sim.tripartite.reference import integrate_lr1994

    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; Brian2 target "
          f"{args.target}; dt 0.1 ms (NEST's resolution in every case)")
    print("| case | variable | n | max abs error | max rel error | tolerance | worst / tolerance | wall |")
    print("|---|---|---|---|---|---|---|---|")
    astro = None
    for case in CASES.values():
        t0 = time.perf_counter()
        rows, out, ref = compare(case, FIXTURES, target=args.target)
        wall = time.perf_counter() - t0
        for r in rows:
            print(f"| {r.case} | {r.column} | {r.n} | {r.max_abs:.3g} | {r.max_rel:.3g} | "
                  f"{TOLERANCE[case.tolerance]} | {r.worst:.3f} | {wall:.1f} s |")
        if case.name == "astrocyte_lr_1994":
            astro = (case, out, ref)
    print()
    for case in CASES.values():
        print(f"- {case.name}: {case.nest_test}")

    case, out, ref = astro
    cols = ["IP3_uM", "Ca_astro_uM", "h_IP3R"]
    exact = integrate_lr1994(case.config.values(), out.t_ms.to_numpy(), case.config.spike_times_ms,
                             case.config.weight)
    k = np.rint(ref.t_ms.to_numpy() / case.config.dt_ms).astype(int)
    brian = np.abs(out[cols].to_numpy() - exact).max(axis=0)
    nest = np.abs(ref[cols].to_numpy() - exact[k]).max(axis=0)
    print("\nastrocyte_lr_1994 against SciPy DOP853 (rtol 1e-13), max abs error:")
    print("| trace | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    print("| Brian2 (rk4, dt 0.1 ms) | " + " | ".join(f"{e:.2g}" for e in brian) + " |")
    print("| NEST reference (odeint) | " + " | ".join(f"{e:.2g}" for e in nest) + " |")
    return 0


if __name__ == "__main__":
    run_main(main)
