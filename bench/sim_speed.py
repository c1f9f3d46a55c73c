"""Wall time of the default RMAAT network run on Brian2's three targets, side by side.

    PYTHONPATH=$PWD python bench/sim_speed.py [--repeats 5] [--cycles 40]

* numpy           runtime mode, pure NumPy code objects
* cython          runtime mode, Cython code objects from the cache (the first run, which
                  may compile, is reported separately)
* cpp_standalone  generate + compile once (reported as build time), then the compiled
                  binary run several times (``device.run``), results read back each time

Each figure is the median of ``--repeats`` runs measured in this one process; ratios are
taken between those medians. The machine may be shared: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

import numpy as np

from astro_rmaat.cli_args import ArgumentParser, positive_int, run_main


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def main() -> None:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--numpy-repeats", type=positive_int, default=3)
    ap.add_argument("--cycles", type=positive_int, default=None, help="override protocol.n_cycles")
    args = ap.parse_args()

    from brian2 import device, second, set_device
    from brian2.devices.device import reset_device

    from astro_sim.network.model import NetworkSimConfig, build_network
    from astro_sim.network.run import run

    cfg = NetworkSimConfig()
    if args.cycles:
        cfg = dataclasses.replace(cfg, protocol=dataclasses.replace(cfg.protocol, n_cycles=args.cycles))
    duration = cfg.protocol.duration_s
    print(f"default network: {cfg.geometry.n_synapses} synapses, {cfg.protocol.n_cycles} cycles "
          f"= {duration:g} s simulated at dt = {cfg.dt_ms} ms ({cfg.method}), "
          f"recording {list(cfg.record)} every {cfg.record_interval_ms} ms")

    t0 = time.perf_counter()
    ref = run(dataclasses.replace(cfg, target="cython"))
    cython_first = time.perf_counter() - t0
    cy_med, cy_all, _ = timed(lambda: run(dataclasses.replace(cfg, target="cython")), args.repeats)
    np_med, np_all, np_out = timed(lambda: run(dataclasses.replace(cfg, target="numpy")), args.numpy_repeats)

    # standalone: build once, run the binary repeatedly
    with tempfile.TemporaryDirectory(prefix="rmaat_bench_") as tmp:
        set_device("cpp_standalone", build_on_run=False)
        try:
            t0 = time.perf_counter()
            built = build_network(dataclasses.replace(cfg, target="cpp_standalone"))
            built.net.run(duration * second, namespace={})
            device.build(directory=tmp, compile=True, run=False, with_output=False)
            build_s = time.perf_counter() - t0

            def standalone_run():
                device.run(directory=tmp, with_output=False)
                return np.asarray(built.boundary_monitor.p_l[:])

            sa_med, sa_all, sa_pl = timed(standalone_run, args.repeats)
        finally:
            device.reinit()
            device.activate()
            reset_device("runtime")

    # the three engines computed the same thing
    ref_pl = ref.samples.pivot(index="element", columns="t_s", values="value").to_numpy()
    np_pl = np_out.samples.pivot(index="element", columns="t_s", values="value").to_numpy()
    dev_np = float(np.abs(np_pl - ref_pl).max())
    dev_sa = float(np.abs(sa_pl - ref_pl[:, :sa_pl.shape[1]]).max())

    def fmt(ts):
        return ", ".join(f"{t:.3f}" for t in ts)

    print(f"numpy           median {np_med:8.3f} s   runs [{fmt(np_all)}]")
    print(f"cython (cached) median {cy_med:8.3f} s   runs [{fmt(cy_all)}]   first run {cython_first:.3f} s")
    print(f"cpp_standalone  median {sa_med:8.3f} s   runs [{fmt(sa_all)}]   build {build_s:.3f} s (generate+compile)")
    print(f"ratios: numpy/cython = {np_med / cy_med:.1f}x, cython/standalone = {cy_med / sa_med:.1f}x, "
          f"numpy/standalone = {np_med / sa_med:.1f}x")
    print(f"standalone pays off after {build_s / max(cy_med - sa_med, 1e-9):.1f} cached-Cython runs "
          f"(build / (cython - standalone run))")
    print(f"max |p_l| deviation at cycle boundaries vs cython: numpy {dev_np:.1e}, standalone {dev_sa:.1e}")


if __name__ == "__main__":
    run_main(main)
