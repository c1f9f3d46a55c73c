"""The Graupner–Brunel pairing table on the tripartite synapse, before and after the rest fix.

60 pre–post pairs at 1 Hz, dt_pair in {-20, 0, +10, +20} ms, rho from 0 and from 1, one
Brian2 network of 8 units per row. Four rows:

* ``plain GB`` (``release_scaling = 0``: every presynaptic spike adds C_pre; the astrocyte
  cannot reach rho) with the astrocyte at rest (``glioscience-ch18/v2``) and with the old
  baseline (no exogenous IP3 flow, F_ex = 0, from the chapter's initial state I = C = 0,
  h = 0.9: the ``glioscience-ch18/v1`` model);
* ``De Pittà–Brunel`` (``release_scaling = 1``: C_pre scaled by r_S/U_0*, so gliotransmission
  reaches rho) with the same two astrocytes.

Prints rho(60 s) from 0 / from 1 and the exponential fit (rho_bar, tau_eff) per dt_pair,
next to the reference table of docs/known_answers.md.
``PYTHONPATH=$PWD python bench/gb_table.py``
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import curve_fit

from astro_rmaat.cli_args import run_main

REFERENCE = {-20: (0.436, 21.0, 0.411, 0.468), 0: (0.502, 13.5, 0.496, 0.508),
             10: (0.555, 14.3, 0.546, 0.562), 20: (0.543, 17.1, 0.527, 0.557)}


def table(release_scaling: float, old_baseline: bool):
    from astro_sim.tripartite.model import TripartiteSimConfig
    from astro_sim.tripartite.params import InitialState, TripartiteParams
    from astro_sim.tripartite.protocols import SpikeProtocolConfig
    from astro_sim.tripartite.run import run

    delays = sorted(REFERENCE)
    params = TripartiteParams(release_scaling=release_scaling, F_ex=0.0 if old_baseline else 2.0)
    init = InitialState(I=0.0, C=0.0, h=0.9) if old_baseline else InitialState()
    cfg = TripartiteSimConfig(n_units=8, rho_init=(0.0, 1.0), record_dt_ms=1000.0, params=params,
                              init=init, record=("rho", "n_glio"),
                              protocol=SpikeProtocolConfig(
                                  kind="pairing", n_pairs=60, pair_rate_hz=1.0,
                                  pair_delays_ms=tuple(float(d) for d in delays for _ in (0, 1))))
    out = run(cfg)
    s, tr = out.samples, out.traces
    n_glio = tr[tr.variable == "n_glio"].groupby("element").value.max().to_numpy()
    rows = {}
    for k, d in enumerate(delays):
        r0 = s[s.element == 2 * k].value.to_numpy()
        r1 = s[s.element == 2 * k + 1].value.to_numpy()
        t = np.arange(r0.size, dtype=float)
        (pinf, tau), _ = curve_fit(lambda t, a, b: a * (1 - np.exp(-t / b)), t, r0, p0=(0.5, 15.0))
        rows[d] = (pinf, tau, r0[-1], r1[-1], int(n_glio[2 * k]))
    return rows


def main() -> int:
    cases = [("plain GB, astrocyte at rest (v2)", 0.0, False),
             ("plain GB, old baseline (v1)", 0.0, True),
             ("De Pittà–Brunel, astrocyte at rest (v2)", 1.0, False),
             ("De Pittà–Brunel, old baseline (v1)", 1.0, True)]
    print("| case | dt_pair ms | rho_bar | tau_eff s | rho(60) from 0 / from 1 | releases | reference |")
    print("|---|---|---|---|---|---|---|")
    for name, rs, old in cases:
        for d, (pinf, tau, f0, f1, n) in table(rs, old).items():
            ref = REFERENCE[d]
            print(f"| {name} | {d:+d} | {pinf:.4f} | {tau:.2f} | {f0:.4f} / {f1:.4f} | {n} | "
                  f"{ref[0]} / {ref[1]} / {ref[2]} / {ref[3]} |", flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
