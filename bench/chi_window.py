"""The ChI oscillation window: steady vs oscillating Ca2+ against clamped IP3, with periods.

One Brian2 run of the tripartite network under the ``ip3_clamp`` protocol, one unit per
clamp value (IP3 held, the ChI subsystem of the G-ChI astrocyte, ``glioscience-ch18/v2``),
each starting from the rest state; the last ``--window`` seconds of ``--duration`` are
classified (oscillating when C spans more than 0.05 uM) and the period measured as the
mean interval between upward crossings of the mid-level. The SciPy reference
(``astro_sim.tripartite.reference.integrate_gchi``, DOP853) gives the same figures side by side.

``PYTHONPATH=$PWD python bench/chi_window.py [--clamps 0.2,0.4,...] [--duration 300]``
"""

from __future__ import annotations

import numpy as np

from astro_rmaat.cli_args import ArgumentParser, run_main


def classify(t: np.ndarray, C: np.ndarray) -> tuple[str, float, float, float]:
    """(state, C min, C max, period s) of a Ca2+ trace."""
    lo, hi = float(C.min()), float(C.max())
    if hi - lo < 0.05:
        return "steady", lo, hi, float("nan")
    mid = 0.5 * (lo + hi)
    up = np.flatnonzero((C[:-1] < mid) & (C[1:] >= mid))
    if up.size < 2:
        return "oscillating", lo, hi, float("nan")
    # linear interpolation of the crossing times
    tc = t[up] + (mid - C[up]) / (C[up + 1] - C[up]) * (t[up + 1] - t[up])
    return "oscillating", lo, hi, float(np.mean(np.diff(tc)))


def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clamps", default="0.1,0.2,0.3,0.4,0.5,0.55,0.6,0.7,0.8,1.0,1.2,1.4,1.5,1.6,2.0,3.0")
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--window", type=float, default=150.0)
    ap.add_argument("--target", default="cython")
    args = ap.parse_args(argv)
    clamps = tuple(float(c) for c in args.clamps.split(","))

    from astro_sim.tripartite.model import TripartiteSimConfig
    from astro_sim.tripartite.protocols import SpikeProtocolConfig
    from astro_sim.tripartite.reference import gchi_rest_state, integrate_gchi
    from astro_sim.tripartite.run import run

    cfg = TripartiteSimConfig(n_units=len(clamps), target=args.target, record_dt_ms=10.0,
                              record=("C", "n_glio", "rho"),
                              protocol=SpikeProtocolConfig(kind="ip3_clamp", ip3_clamp_uM=clamps,
                                                           clamp_duration_s=args.duration))
    out = run(cfg)
    tr = out.traces
    rest = gchi_rest_state(cfg.params)
    print(f"ChI window, {cfg.param_sets[0]}, IP3 clamped from the rest state "
          f"(C = {rest['C']:.6g} uM, h = {rest['h']:.6g}); last {args.window:g} s of {args.duration:g} s")
    print("| IP3 (uM) | Brian2 | C min-max (uM) | period (s) | SciPy | period (s) | releases |")
    print("|---|---|---|---|---|---|---|")
    for e, clamp in enumerate(clamps):
        sub = tr[(tr.variable == "C") & (tr.element == e)]
        t, C = sub.t_s.to_numpy(), sub.value.to_numpy()
        keep = t >= args.duration - args.window
        state, lo, hi, period = classify(t[keep], C[keep])
        ref = integrate_gchi(cfg.params, [0.0, clamp, rest["C"], rest["h"]], args.duration,
                             t_eval=t[keep], clamp_uM=clamp, rtol=1e-9, atol=1e-12)
        rstate, _, _, rperiod = classify(ref.t, ref.y[2])
        n = tr[(tr.variable == "n_glio") & (tr.element == e)].value.to_numpy()[-1]
        print(f"| {clamp:g} | {state} | {lo:.4f}-{hi:.4f} | {period:.3f} | {rstate} | "
              f"{rperiod:.3f} | {int(n)} |")
    return 0


if __name__ == "__main__":
    run_main(main)
