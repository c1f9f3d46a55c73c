"""Running the RMAAT network (model family ``rmaat_network``): ``run(cfg) -> SimOutput``.

Builds the network of :mod:`astro_sim.network.model` on the config's Brian2 target, runs
the protocol and returns the traces (every ``record_interval_ms``) and the samples of the
slow variable ``p_l`` at the cycle boundaries. The family's entry module: the registry of
:mod:`astro_sim.simulate` names it.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import pandas as pd

from astro_rmaat.errors import ConfigError
from astro_sim.network.model import VARIABLES, BuiltNetwork, NetworkSimConfig, build_network
from astro_sim.network.params import PARAM_SET_ID
from astro_sim.output import SimOutput
from astro_sim.simulate import check_complete


def _long(t_s: np.ndarray, values: np.ndarray, variable: str, unit: str) -> pd.DataFrame:
    """(n_elements, n_times) -> long rows sorted by element, then time."""
    n_el, n_t = values.shape
    return pd.DataFrame({
        "t_s": np.tile(t_s, n_el),
        "variable": variable,
        "element": np.repeat(np.arange(n_el, dtype=np.int64), n_t),
        "value": values.reshape(-1),
        "unit": unit,
    })


def _final_state(built: BuiltNetwork, var: str) -> np.ndarray:
    group = built.neurons if VARIABLES[var][0] == "neurons" else built.synapses
    return np.asarray(getattr(group, var)[:], dtype=float)


def validate(cfg: NetworkSimConfig) -> None:
    """Sizes that cannot fit in memory, refused before Brian2 builds anything: every pair of
    synapses is coupled (two int64 indices a pair while connecting), and the traces."""
    from astro_rmaat.resources import check_memory
    from astro_sim.simulate import check_trace_memory

    g = cfg.geometry
    n_syn = g.n_synapses
    pairs = n_syn * (n_syn - 1)
    check_memory(16 * pairs, f"geometry.n_pre = {g.n_pre}, geometry.n_post = {g.n_post}: {n_syn:,} synapses "
                             f"coupled in {pairs:,} pairs, whose indices", "fewer neurons")
    per_sample = sum(g.n_neurons if VARIABLES[v][0] == "neurons" else n_syn for v in cfg.record)
    n_samples = int(cfg.protocol.duration_s / (cfg.record_interval_ms * 1e-3) + 1e-9) + 1
    check_trace_memory(n_samples, per_sample, f"record_interval_ms = {cfg.record_interval_ms} over "
                                              f"{cfg.protocol.duration_s:g} s")


#: Brian2 ``report`` of the run ("stderr" prints progress over simulated time; set by simulate)
REPORT: str | None = None


def run(cfg: NetworkSimConfig) -> SimOutput:
    """Simulate ``cfg`` with Brian2; return traces and the cycle-boundary samples of p_l."""
    from brian2 import device, prefs, set_device, second
    from brian2.devices.device import reset_device

    if not isinstance(cfg, NetworkSimConfig):
        raise ConfigError(f"expected a NetworkSimConfig, got {type(cfg).__name__}")
    duration = cfg.protocol.duration_s
    standalone = cfg.target == "cpp_standalone"
    tmp = None
    t0 = time.perf_counter()
    try:
        if standalone:
            tmp = tempfile.TemporaryDirectory(prefix="rmaat_standalone_")
            set_device("cpp_standalone", directory=tmp.name, build_on_run=True, with_output=False)
        else:
            prefs.codegen.target = cfg.target
        prefs.core.stop_on_keyboard_interrupt = False   # Ctrl-C raises, never a short run (check_complete)
        built = build_network(cfg)
        built.net.run(duration * second, namespace={}, report=REPORT, report_period=10 * second)
        traces, samples = _collect(cfg, built)
    finally:
        if standalone:
            device.reinit()
            device.activate()
            reset_device("runtime")
            if tmp is not None:
                tmp.cleanup()
    wall = time.perf_counter() - t0
    attrs = {
        "model": cfg.model,
        "tau_cycle_s": cfg.protocol.tau_cycle_s,
        "n_cycles": cfg.protocol.n_cycles,
        "slow_variable": "p_l",
        "dt_s": cfg.dt_ms * 1e-3,
        "record_interval_s": cfg.record_interval_ms * 1e-3,
        "target": cfg.target,
        "method": cfg.method,
        "param_set": PARAM_SET_ID,
        "params_modified": not cfg.params.is_default(),
        "n_synapses": int(len(built.pre)),
        "synapse_pre": built.pre.tolist(),
        "synapse_post": built.post.tolist(),
        "run_wall_s": wall,
    }
    return SimOutput(traces=traces, samples=samples, attrs=attrs)


def _collect(cfg: NetworkSimConfig, built: BuiltNetwork) -> tuple[pd.DataFrame, pd.DataFrame]:
    duration = cfg.protocol.duration_s
    rec_dt = cfg.record_interval_ms * 1e-3
    frames = []
    for var, mon in built.monitors.items():
        t_s = np.asarray(mon.t[:] / _second(), dtype=float)
        vals = np.asarray(getattr(mon, var)[:], dtype=float)
        # every recording time before the end: fewer means the run stopped early
        check_complete(t_s.size, int(np.ceil(duration / rec_dt - 1e-9)), float(t_s[-1]) if t_s.size else 0.0,
                       duration)
        # the state at the end of the run, when it lies on the recording grid
        n_end = duration / rec_dt
        if abs(n_end - round(n_end)) < 1e-9 and (t_s.size == 0 or t_s[-1] < duration - rec_dt / 2):
            t_s = np.append(t_s, duration)
            vals = np.concatenate([vals, _final_state(built, var)[:, None]], axis=1)
        frames.append(_long(t_s, vals, var, VARIABLES[var][1]))
    traces = (pd.concat(frames, ignore_index=True) if frames else
              pd.DataFrame({"t_s": [], "variable": [], "element": [], "value": [], "unit": []}))

    # p_l exactly at t = k tau_cycle, k = 0..n_cycles: the monitor holds k < n_cycles (taken at
    # the start of step k tau_cycle/dt, i.e. the state at that time), the last is the final state.
    bmon = built.boundary_monitor
    b_vals = np.asarray(bmon.p_l[:], dtype=float)[:, : cfg.protocol.n_cycles]
    check_complete(b_vals.shape[1], cfg.protocol.n_cycles, float(bmon.t[-1] / _second()) if len(bmon.t) else 0.0,
                   duration)
    b_vals = np.concatenate([b_vals, _final_state(built, "p_l")[:, None]], axis=1)
    samples = _long(cfg.protocol.boundaries_s(), b_vals, "p_l", VARIABLES["p_l"][1])
    return traces, samples


def _second():
    from brian2 import second

    return second
