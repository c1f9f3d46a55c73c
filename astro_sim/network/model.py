"""The RMAAT neuron–astrocyte network in Brian2 (model family ``rmaat_network``): config and model.

Objects (all real Brian2 groups with units):

* ``neurons``  NeuronGroup: rate neurons ``x`` with positions; presynaptic neurons first.
* ``synapses`` Synapses(neurons, neurons): synaptic state ``s``, short-term astrocytic
  process ``p_s`` and long-term process ``p_l`` of every pre -> post pair; its summed
  variable ``I_syn_post`` is the neurons' synaptic input.
* ``coupling`` Synapses(synapses, synapses): process-to-process coupling; its summed
  variable ``C_ps_post = T psi(p_s_pre)`` is sum_kl T_ijkl psi(p_s_kl), with T set once
  from the distance between the synapse midpoints.

The drive ``b_j(t)`` comes from the protocol (:mod:`astro_sim.network.protocols`) as step counts in
the namespace; it is set once at the start of each step, so the drive is exactly piecewise
constant between switch times (which lie on the dt grid). Running it:
:mod:`astro_sim.network.run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from astro_rmaat.config import require_positive, require_seed
from astro_rmaat.errors import ConfigError
from astro_sim.network.params import (Geometry, NetworkParams, namespace, neuron_positions_um,
                                      synapse_pairs)
from astro_sim.network.protocols import DRIVE_EXPR, STPProtocol, drive_namespace, steps_of

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
        require_seed("seed", self.seed)
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


# Model equations (astro_sim.network.params). phi = theta = psi = kappa = tanh, g(s) = s.
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


@dataclass
class BuiltNetwork:
    net: Any                     # brian2.Network
    neurons: Any
    synapses: Any
    coupling: Any
    monitors: dict[str, Any]     # variable -> StateMonitor (at the recording interval)
    boundary_monitor: Any        # p_l at every cycle boundary
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
                        monitors=monitors, boundary_monitor=boundary,
                        pre=pre, post=post)
