"""Running the tripartite synapse (model family ``tripartite``): ``run(cfg) -> SimOutput``.

The family's entry module, named by the registry of :mod:`astro_sim.simulate`. Besides
``run`` and ``validate`` it offers the hooks :mod:`astro_sim.sweep` looks for on a family:

``standalone_build(configs, default_dir) -> (build_dir, keys, builds)``
    before a ``standalone`` sweep dispatches its points: build each distinct code signature
    once (:func:`astro_sim.tripartite.standalone.standalone_build`).
``standalone_point(build_dir, key, worker_dir)``
    a context manager around each point of such a sweep: the point runs from the worker
    process's own copy of its build (:func:`astro_sim.tripartite.standalone.standalone_point`).
``warm_imports(standalone)``
    import what a point needs, in a worker process before its first point.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from astro_rmaat.errors import ConfigError
from astro_sim.output import SimOutput
from astro_sim.param_table import si_factor
from astro_sim.simulate import check_complete
from astro_sim.tripartite import standalone as sa
from astro_sim.tripartite.model import TARGETS, TripartiteSimConfig, build_network
from astro_sim.tripartite.params import VARIABLES
from astro_sim.tripartite.protocols import Stimulus, make_stimulus

# the sweep hooks of a standalone sweep (module docstring)
standalone_build = sa.standalone_build
standalone_point = sa.standalone_point


def recorded_samples(duration_s: float, record_dt_s: float) -> int:
    """Times a complete run records: the network runs one recording step past ``duration_s``
    (``model.build_network``), so every grid time up to the first at or past the end."""
    return int(np.ceil(duration_s / record_dt_s - 1e-9)) + 1


def validate(cfg: TripartiteSimConfig) -> None:
    """Check what only the protocol arrays reveal (spike times inside the run, capacity), and
    traces that cannot fit in memory."""
    from astro_rmaat.resources import check_memory
    from astro_sim.simulate import check_trace_memory

    times = 2 * (cfg.max_spikes + 1) * cfg.n_units   # the pre and post spike tables, float64
    check_memory(8 * times, f"n_units = {cfg.n_units}, max_spikes = {cfg.max_spikes}: spike tables of "
                            f"{times:,} times", "fewer units or a smaller max_spikes")
    stim = make_stimulus(cfg.protocol, cfg.n_units, cfg.dt_ms * 1e-3, cfg.seed, cfg.max_spikes)
    n_samples = recorded_samples(stim.duration_s, cfg.record_dt_ms * 1e-3)
    check_trace_memory(n_samples, cfg.n_units * len(cfg.record),
                       f"record_dt_ms = {cfg.record_dt_ms}, n_units = {cfg.n_units} over {stim.duration_s:g} s")


def warm_imports(standalone: bool) -> None:
    """Sweep hook: what a point imports beyond this module (SciPy for the astrocyte's rest
    state); Brian2 is the sweep's to import (only runtime points need it)."""
    from astro_sim.tripartite import reference  # noqa: F401


def _to_trace_unit(var: str, values: np.ndarray) -> np.ndarray:
    """SI values (mM for concentrations) -> the unit named in VARIABLES."""
    return values / si_factor(VARIABLES[var].unit)


def assemble_output(cfg: TripartiteSimConfig, stim: Stimulus, t_s: np.ndarray,
                    arrays: dict[str, np.ndarray]) -> SimOutput:
    """Monitor arrays ``{var: (n_t, n_units) SI}`` -> SimOutput (long-format traces, samples)."""
    n_t = t_s.size
    rec_dt = cfg.record_dt_ms * 1e-3
    check_complete(n_t, recorded_samples(stim.duration_s, rec_dt), float(t_s[-1]) if n_t else 0.0, stim.duration_s)
    frames = []
    for var in cfg.record:
        vals = _to_trace_unit(var, np.asarray(arrays[var], dtype=np.float64).reshape(n_t, cfg.n_units))
        frames.append(pd.DataFrame({
            "t_s": np.repeat(t_s, cfg.n_units), "variable": var,
            "element": np.tile(np.arange(cfg.n_units, dtype=np.int64), n_t),
            "value": vals.ravel(), "unit": VARIABLES[var].unit}))
    traces = pd.concat(frames, ignore_index=True)
    idx = np.rint(stim.boundaries_s / rec_dt).astype(np.int64)
    rho = np.asarray(arrays["rho"], dtype=np.float64).reshape(n_t, cfg.n_units)[idx]
    samples = pd.DataFrame({
        "t_s": np.repeat(t_s[idx], cfg.n_units), "variable": "rho",
        "element": np.tile(np.arange(cfg.n_units, dtype=np.int64), idx.size),
        "value": rho.ravel(), "unit": "1"})
    attrs = {
        "model": "tripartite", "tau_cycle_s": stim.period_s, "slow_variable": "rho",
        "dt_s": cfg.dt_ms * 1e-3, "record_dt_s": rec_dt, "target": cfg.target,
        "param_sets": list(cfg.param_sets), "protocol_kind": cfg.protocol.kind,
        "n_units": cfg.n_units, "samples_sampling": "cycle_boundaries",
        "n_pre_spikes": [int(a.size) for a in stim.pre_times_s],
    }
    return SimOutput(traces=traces, samples=samples, attrs=attrs)


def _run_runtime(cfg: TripartiteSimConfig, stim: Stimulus):
    import brian2 as b2

    b2.prefs.codegen.target = cfg.target
    b2.prefs.core.stop_on_keyboard_interrupt = False   # Ctrl-C raises, never a short run (check_complete)
    h = build_network(cfg, stim)
    h.net.run(h.duration, namespace={})
    mons = [m for m in (h.unit_mon, h.syn_mon) if m is not None]
    t_s = np.asarray(mons[0].t / b2.second)
    arrays = {}
    for mon in mons:
        for var in mon.record_variables:
            arrays[var] = np.asarray(getattr(mon, var + "_")).T  # (n_t, n_units), SI
    return t_s, arrays


def run(cfg: TripartiteSimConfig) -> SimOutput:
    """Simulate ``cfg`` in memory (no run directory); same config -> same numbers."""
    if cfg.target not in TARGETS:
        raise ConfigError(f"target = {cfg.target!r}: expected one of {', '.join(TARGETS)}")
    stim = make_stimulus(cfg.protocol, cfg.n_units, cfg.dt_ms * 1e-3, cfg.seed, cfg.max_spikes)
    if cfg.target == "cpp_standalone":
        project = sa.get_project(cfg, stim)
        t_s, arrays, binary_wall_s = project.run(cfg, stim)
        out = assemble_output(cfg, stim, t_s, arrays)
        out.attrs["binary_wall_s"] = binary_wall_s   # a wall time: meta.json, not the traces
        return out
    # the runtime targets; a standalone run needs neither brian2 nor a compiler
    import brian2 as b2
    b2.start_scope()
    t_s, arrays = _run_runtime(cfg, stim)
    return assemble_output(cfg, stim, t_s, arrays)
