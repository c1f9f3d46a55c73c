"""The RMAAT neuron–astrocyte network in Brian2 (model family ``rmaat_network``).

Objects (all real Brian2 groups with units):

* ``neurons``  NeuronGroup: rate neurons ``x`` with positions; presynaptic neurons first.
* ``synapses`` Synapses(neurons, neurons): synaptic state ``s``, short-term astrocytic
  process ``p_s`` and long-term process ``p_l`` of every pre -> post pair; its summed
  variable ``I_syn_post`` is the neurons' synaptic input.
* ``coupling`` Synapses(synapses, synapses): process-to-process coupling; its summed
  variable ``C_ps_post = T psi(p_s_pre)`` is sum_kl T_ijkl psi(p_s_kl), with T set once
  from the distance between the synapse midpoints.

The drive ``b_j(t)`` comes from the protocol (:mod:`astro_sim.protocols`) as step counts in
the namespace; it is set once at the start of each step, so the drive is exactly piecewise
constant between switch times (which lie on the dt grid).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from astro_rmaat.config import require_positive
from astro_rmaat.errors import ConfigError
from astro_sim.network_params import (PARAM_SET_ID, Geometry, NetworkParams, neuron_positions_um,
                                      synapse_pairs)
from astro_sim.protocols import DRIVE_EXPR, STPProtocol, drive_namespace, steps_of
from astro_sim.simulate import SimOutput

#: variable -> (group, unit written to the traces)
VARIABLES: dict[str, tuple[str, str]] = {
    "x": ("neurons", "1"), "s": ("synapses", "1"), "p_s": ("synapses", "1"), "p_l": ("synapses", "1"),
}
TARGETS = ("numpy", "cython", "cpp_standalone")


@dataclass(frozen=True)
class NetworkSimConfig:
    model: Literal["rmaat_network"] = "rmaat_network"         # model family (dispatch key)
    seed: int = 1                                             # seeds Brian2 and the position jitter
    target: Literal["numpy", "cython", "cpp_standalone"] = "cython"  # Brian2 code generation target
    dt_ms: float = 1.0                                        # ms  integration time step
    method: Literal["rk4", "rk2", "euler"] = "rk4"            # Brian2 state-update method
    record_interval_ms: float = 10.0                          # ms  trace sampling interval (<= cycle)
    record: tuple[str, ...] = ("x", "s", "p_s", "p_l")        # variables written to traces.parquet
    params: NetworkParams = NetworkParams()                   # the parameter set (rmaat-network/v1)
    protocol: STPProtocol = STPProtocol()                     # the STP-cycle protocol
    geometry: Geometry = Geometry()                           # neuron placement

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed = {self.seed!r}: expected an integer >= 0")
        require_positive("dt_ms", self.dt_ms, "ms")
        require_positive("record_interval_ms", self.record_interval_ms, "ms")
        unknown = [v for v in self.record if v not in VARIABLES]
        if unknown:
            raise ConfigError(f"record = {list(self.record)!r}: unknown variable {unknown[0]!r}; "
                              f"expected a list drawn from {list(VARIABLES)}")
        if len(set(self.record)) != len(self.record):
            raise ConfigError(f"record = {list(self.record)!r}: a variable is listed twice")
        cycle_ms = self.protocol.tau_cycle_s * 1e3
        if self.record_interval_ms > cycle_ms * (1 + 1e-9):
            raise ConfigError(f"record_interval_ms = {self.record_interval_ms!r}: expected at most the "
                              f"cycle length protocol.tau_cycle_s = {self.protocol.tau_cycle_s!r} s "
                              f"(= {cycle_ms:g} ms), or the traces would miss whole cycles")
        dt_s = self.dt_ms * 1e-3
        steps_of(self.record_interval_ms * 1e-3, dt_s, "record_interval_ms (in s)")
        steps_of(self.protocol.tau_cycle_s, dt_s, "protocol.tau_cycle_s")
        steps_of(self.protocol.drive_s, dt_s, "protocol.drive_s")
        self.protocol.driven_mask(self.geometry.n_neurons)  # indices exist
        if self.dt_ms > self.params.tau_n_ms / 2:
            raise ConfigError(f"dt_ms = {self.dt_ms!r}: expected at most half the fastest time "
                              f"constant params.tau_n_ms = {self.params.tau_n_ms!r} ms")


# Model equations (DESIGN.md). phi = theta = psi = kappa = tanh, g(s) = s.
NEURON_EQS = """
dx/dt = (-lam*x + I_syn + b) / tau_n : 1    # firing rate (arbitrary units)
I_syn : 1                                   # sum_i g(s_ij) phi(x_i), written by the synapses
b : 1                                       # external drive b_j(t), held constant within a step
driven : 1 (constant)                       # 1 if the protocol drives this neuron
x_pos : metre (constant)                    # position
y_pos : metre (constant)
"""

SYNAPSE_EQS = """
ds/dt = (-beta*s + tanh(x_pre)*tanh(x_post) + tanh(p_s)) / tau_s : 1 (clock-driven)  # synaptic state
dp_s/dt = (-gamma_s*p_s + C_ps + tanh(s)) / tau_ps : 1 (clock-driven)  # short-term process
dp_l/dt = (-gamma_l*p_l + tanh(s)) / tau_pl : 1 (clock-driven)          # long-term process
I_syn_post = s*tanh(x_pre) : 1 (summed)     # g(s) phi(x_pre) into the postsynaptic neuron
C_ps : 1                                    # sum_kl T_ijkl psi(p_s_kl), written by the coupling
x_mid : metre (constant)                    # process location: midpoint of pre and post neuron
y_mid : metre (constant)
"""

COUPLING_EQS = """
T : 1 (constant)                            # T_ijkl = c_T exp(-dist / l_T)
C_ps_post = T*tanh(p_s_pre) : 1 (summed)    # psi(p_s_kl) of the source process
"""

T_EXPR = "c_T * exp(-sqrt((x_mid_pre - x_mid_post)**2 + (y_mid_pre - y_mid_post)**2) / l_T)"


def namespace(params: NetworkParams) -> dict[str, Any]:
    """The parameter set with Brian2 units."""
    from brian2 import ms, second, umetre

    return {
        "tau_n": params.tau_n_ms * ms, "lam": params.lam,
        "tau_s": params.tau_s_ms * ms, "beta": params.beta,
        "tau_ps": params.tau_ps_ms * ms, "gamma_s": params.gamma_s,
        "tau_pl": params.tau_pl_s * second, "gamma_l": params.gamma_l,
        "c_T": params.c_T, "l_T": params.l_T_um * umetre,
    }


@dataclass
class BuiltNetwork:
    net: Any                     # brian2.Network
    neurons: Any
    synapses: Any
    coupling: Any
    monitors: dict[str, Any]     # variable -> StateMonitor (at the recording interval)
    boundary_monitor: Any        # p_l at every cycle boundary
    namespace: dict[str, Any]
    pre: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    post: np.ndarray = field(default_factory=lambda: np.zeros(0, int))


def build_network(cfg: NetworkSimConfig) -> BuiltNetwork:
    """Build the Brian2 objects for ``cfg`` in a fresh scope (does not run them)."""
    from brian2 import (Network, NeuronGroup, StateMonitor, Synapses, defaultclock, ms, second,
                        seed, start_scope, umetre)

    start_scope()
    seed(cfg.seed)
    dt = cfg.dt_ms * ms
    defaultclock.dt = dt
    ns = namespace(cfg.params)
    ns.update(drive_namespace(cfg.protocol, cfg.dt_ms * 1e-3))

    geometry = cfg.geometry
    positions = neuron_positions_um(geometry, cfg.seed)
    neurons = NeuronGroup(geometry.n_neurons, NEURON_EQS, method=cfg.method, namespace=ns,
                          name="neurons")
    neurons.x_pos = positions[:, 0] * umetre
    neurons.y_pos = positions[:, 1] * umetre
    neurons.driven = cfg.protocol.driven_mask(geometry.n_neurons)
    neurons.run_regularly(f"b = ({DRIVE_EXPR}) * driven", when="start", name="drive")

    pre, post = synapse_pairs(geometry)
    synapses = Synapses(neurons, neurons, SYNAPSE_EQS, method=cfg.method, namespace=ns,
                        name="synapses")
    synapses.connect(i=pre, j=post)
    if not (np.array_equal(synapses.i[:], pre) and np.array_equal(synapses.j[:], post)):
        raise RuntimeError("Brian2 reordered the synapses; element indices would be ambiguous")
    mid = (positions[pre] + positions[post]) / 2.0   # process locations (um)
    synapses.x_mid = mid[:, 0] * umetre
    synapses.y_mid = mid[:, 1] * umetre

    coupling = Synapses(synapses, synapses, COUPLING_EQS, namespace=ns, name="coupling")
    # every other process, no self-coupling. Explicit index arrays: Brian2 2.9's Cython
    # template for a *condition* on a Synapses-to-Synapses connect fails (N_pre undeclared).
    n_syn = len(synapses)
    src, tgt = np.nonzero(~np.eye(n_syn, dtype=bool))
    coupling.connect(i=src, j=tgt)
    coupling.T = T_EXPR

    rec_dt = cfg.record_interval_ms * ms
    monitors = {}
    for var in cfg.record:
        group = neurons if VARIABLES[var][0] == "neurons" else synapses
        monitors[var] = StateMonitor(group, var, record=np.arange(len(group)), dt=rec_dt,
                                     name=f"mon_{var}")
    boundary = StateMonitor(synapses, "p_l", record=np.arange(len(synapses)),
                            dt=cfg.protocol.tau_cycle_s * second, name="mon_boundaries")
    net = Network(neurons, synapses, coupling, boundary, *monitors.values())
    return BuiltNetwork(net=net, neurons=neurons, synapses=synapses, coupling=coupling,
                        monitors=monitors, boundary_monitor=boundary, namespace=ns,
                        pre=pre, post=post)


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
    b_vals = np.concatenate([b_vals, _final_state(built, "p_l")[:, None]], axis=1)
    samples = _long(cfg.protocol.boundaries_s(), b_vals, "p_l", VARIABLES["p_l"][1])
    return traces, samples


def _second():
    from brian2 import second

    return second


def default_config(**changes: Any) -> NetworkSimConfig:
    """The default config with top-level fields replaced (a convenience for notebooks/tests)."""
    return dataclasses.replace(NetworkSimConfig(), **changes)
