"""Peak memory a recorded value costs a simulation, against the bound its memory check uses.

    PYTHONPATH=$PWD python bench/trace_memory.py [--family rmaat_network tripartite] [--scale 10] [--units 1]

Before a run, ``astro_sim.simulate.check_trace_memory`` refuses a recording whose values would
not fit in memory at ``TRACE_BYTES_PER_VALUE`` bytes each, a lower bound of what they take. This
bench runs each family's default config twice, each in a fresh process that writes its run
directory into a temporary folder: at the config's own recording interval (10 ms), and at that
interval divided by ``--scale`` (a whole number of the families' 1 ms time step). It reads each
process's peak resident memory (``ru_maxrss``) and the rows of its ``traces.parquet``.
The difference in peak memory over the difference in rows is what one more recorded value
costs at the peak: Brian2's monitor, the long tables, the Arrow table and the Parquet writer.
The fixed costs (Python, Brian2, the compiled code) cancel. ``--units`` sets the tripartite
family's ``n_units`` in both runs (more rows a sample). Prints both runs of each family and that
slope beside the constant.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from astro_rmaat.cli_args import ArgumentParser, positive_int, run_main

#: each family's recording-interval field
INTERVAL = {"rmaat_network": "record_interval_ms", "tripartite": "record_dt_ms"}

CHILD = r"""
import json, resource, sys
import pyarrow.parquet as pq
from astro_sim.simulate import load_sim_config, simulate
out, overrides = sys.argv[1], sys.argv[2:]
simulate(load_sim_config(overrides=overrides), out)
print(json.dumps({"rows": pq.ParquetFile(f"{out}/traces.parquet").metadata.num_rows,
                  "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def peak(overrides: list[str], out: Path) -> dict:
    """{"rows": traces rows, "peak_bytes": peak resident bytes} of one simulation in a fresh process."""
    here = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", CHILD, str(out), *overrides], cwd=here,
                          capture_output=True, text=True)
    if done.returncode != 0:   # the simulation's own one-line refusal (a config error) or its last line
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise SystemExit(f"error: {' '.join(overrides)}: {lines[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    from astro_sim.simulate import TRACE_BYTES_PER_VALUE, load_sim_config

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", nargs="+", choices=sorted(INTERVAL), default=sorted(INTERVAL))
    ap.add_argument("--scale", type=positive_int, default=10,
                    help="the second run records this many times as often (default 10)")
    ap.add_argument("--units", type=positive_int, default=1, help="the tripartite family's n_units (default 1)")
    args = ap.parse_args()
    if args.scale < 2:
        ap.error(f"--scale {args.scale}: expected 2 or more (two runs of different sizes)")
    print(f"TRACE_BYTES_PER_VALUE = {TRACE_BYTES_PER_VALUE}")
    print(f"{'family':>14} {'interval ms':>11} {'rows':>10} {'peak MiB':>9}")
    slopes = []
    with tempfile.TemporaryDirectory(prefix="rmaat_trace_memory_") as tmp:
        for family in args.family:
            field = INTERVAL[family]
            common = [f"model={family}"] + ([f"n_units={args.units}"] if family == "tripartite" else [])
            base = getattr(load_sim_config(overrides=common), field)
            runs = []
            for i, interval in enumerate((base, base / args.scale)):
                r = peak([*common, f"{field}={interval}"], Path(tmp) / f"{family}-{i}")
                runs.append(r)
                print(f"{family:>14} {interval:>11g} {r['rows']:>10,} {r['peak_bytes'] / 2 ** 20:>9.1f}")
            slope = (runs[1]["peak_bytes"] - runs[0]["peak_bytes"]) / (runs[1]["rows"] - runs[0]["rows"])
            slopes.append(slope)
            print(f"{family:>14}: {slope:.0f} bytes at the peak per recorded value "
                  f"({slope / TRACE_BYTES_PER_VALUE:.2f}x the check's {TRACE_BYTES_PER_VALUE})")
    low, high = min(slopes), max(slopes)
    verdict = ("below each: a lower bound, so a size it refuses did not fit here" if TRACE_BYTES_PER_VALUE <= low
               else "ABOVE a measured figure: it can refuse a size that fits")
    print(f"measured {low:.0f}-{high:.0f} bytes per value; the check counts {TRACE_BYTES_PER_VALUE}, {verdict}")
    return 0


if __name__ == "__main__":
    run_main(main)
