"""Spiking tripartite synapse: Tsodyks–Markram release, G-ChI astrocyte, Graupner–Brunel rho.

The config of the family and its Brian2 network (running it: :mod:`astro_sim.tripartite.run`).

One *unit* is a presynaptic terminal, its cleft, the astrocyte that ensheathes it and the
synapse's long-term efficacy. ``n_units`` independent units run vectorised in one Brian2
network (one astrocyte per unit):

=============  ============================================================================
``pre_gen``    presynaptic spikes: ``threshold = pre_spike(t, i) > 0.5`` (TimedArray, data)
``post_gen``   postsynaptic spikes: ``post_spike(t, i) > 0.5`` (TimedArray, data)
``syn``        ``Synapses(pre_gen, unit)`` one-to-one: TM release ``u_S, x_S``, cleft
               glutamate ``Y_S``, presynaptic gliotransmitter receptors ``Gamma_S``;
               pathway ``ca`` (delay ``D_pre``) adds the presynaptic calcium jump to ``c``
``postsyn``    ``Synapses(post_gen, unit)`` one-to-one: postsynaptic calcium jump
``unit``       ``NeuronGroup``: G-ChI astrocyte (``Gamma_A, I, C, h``), gliotransmitter
               (``G_A, x_A``, released when ``C`` crosses ``C_Theta`` upward), and the
               Graupner–Brunel calcium ``c`` and efficacy ``rho``
=============  ============================================================================

Equations: below (sources in :mod:`astro_sim.tripartite.param_sets`: Computational
Glioscience ch. 18 / Stimberg et al. 2018, Graupner & Brunel 2012); parameters:
:mod:`astro_sim.tripartite.params` and ``docs/parameters.md``; rest state, initial state and
LIF neuron: ``docs/tripartite.md``. Two choices worth knowing:

* ``Gamma_S`` lives in the synapse and reads the astrocyte's ``G_A`` as a constant within a
  step (exponential Euler, as in the chapter's code): the kick from one release is ~1 % high
  at dt = 1 ms and within 0.002 of ``1 - exp(-1.95)`` at dt <= 0.1 ms.
* the Graupner–Brunel thresholds act for the exact time ``c`` spends above them within a
  step (``c`` decays exponentially between jumps, so that time is ``tau_Ca ln(c/theta)``),
  computed at the start of each step; this keeps the pairing table accurate at dt = 1 ms.

Every parameter is a ``(shared, constant)`` variable and every stimulus a TimedArray, so a
``cpp_standalone`` build is reused for any parameter values and any protocol of the same
duration (:mod:`astro_sim.tripartite.standalone`). No Brian2 random numbers are used: the
only randomness (Poisson trains) is drawn in NumPy from ``seed``, so every target sees the
same spikes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from astro_rmaat.config import require_positive, require_seed
from astro_rmaat.errors import ConfigError
from astro_sim.param_table import base_unit, declaration, quantity, si_factor
from astro_sim.tripartite import param_sets as ps
from astro_sim.tripartite.params import (DEFAULT_SETS, PARAM_UNITS, PARAMS, REST_FIXED, STATE_RANGES,
                                         VARIABLES, InitialState, TripartiteParams)
from astro_sim.tripartite.protocols import SpikeProtocolConfig, Stimulus

DEFAULT_RECORD = ("u_S", "x_S", "Gamma_S", "Y_S", "Gamma_A", "I", "C", "h", "G_A", "x_A",
                  "n_glio", "c", "rho", "v")
TARGETS = ("numpy", "cython", "cpp_standalone")


@dataclass(frozen=True)
class TripartiteSimConfig:
    model: Literal["tripartite"] = "tripartite"    # model family (dispatch key of astro_sim.simulate)
    seed: int = 0                                  # seeds the NumPy draws of Poisson trains
    target: Literal["numpy", "cython", "cpp_standalone"] = "cython"  # Brian2 code generation target
    dt_ms: float = 1.0                             # ms, integration step
    record_dt_ms: float = 10.0                     # ms, sampling step of traces.parquet
    n_units: int = 1                               # independent synapse–astrocyte units
    max_spikes: int = 4096                         # capacity of each unit's spike table (pre and post)
    rho_init: tuple[float, ...] = (0.0,)           # 1, initial efficacy; unit i takes rho_init[i % len]
    param_sets: tuple[str, ...] = DEFAULT_SETS      # names of the parameter sets the defaults come from
    params: TripartiteParams = field(default_factory=TripartiteParams)  # model parameters
    init: InitialState = field(default_factory=InitialState)  # initial state (null: the rest state)
    protocol: SpikeProtocolConfig = field(default_factory=SpikeProtocolConfig)  # stimulation
    record: tuple[str, ...] = DEFAULT_RECORD       # variables written to traces.parquet
    standalone_dir: str = ""                       # cpp_standalone build cache ("" = per-user cache)

    def __post_init__(self) -> None:
        require_seed("seed", self.seed)
        require_positive("dt_ms", self.dt_ms, "ms")
        require_positive("record_dt_ms", self.record_dt_ms, "ms")
        if self.n_units < 1:
            raise ConfigError(f"n_units = {self.n_units!r}: expected >= 1")
        if self.max_spikes < 1:
            raise ConfigError(f"max_spikes = {self.max_spikes!r}: expected >= 1")
        ratio = self.record_dt_ms / self.dt_ms
        if abs(ratio - round(ratio)) > 1e-9:
            raise ConfigError(f"record_dt_ms = {self.record_dt_ms!r}: expected a multiple of "
                              f"dt_ms = {self.dt_ms!r}")
        if not self.rho_init or not all(0 <= r <= 1 for r in self.rho_init):
            raise ConfigError(f"rho_init = {list(self.rho_init)!r}: expected a non-empty list "
                              "of values in [0, 1]")
        for name in self.param_sets:
            ps.parameter_set(name)
        c_max = self.params.C_T / (1 + self.params.rho_A)
        if self.init.C is not None and self.init.C > c_max:
            raise ConfigError(f"init.C = {self.init.C!r} uM: expected at most C_T/(1 + rho_A) = "
                              f"{c_max:.6g} uM (all free Ca2+ in the cytosol)")
        unknown = [v for v in self.record if v not in VARIABLES]
        if unknown or not self.record:
            raise ConfigError(f"record = {list(self.record)!r}: expected a non-empty list of "
                              f"{', '.join(VARIABLES)}")
        if "rho" not in self.record:
            raise ConfigError("record must include 'rho' (the slow variable of samples.parquet)")
        period_steps = self.protocol.period_s * 1e3 / self.record_dt_ms
        if abs(period_steps - round(period_steps)) > 1e-6:
            raise ConfigError(f"protocol period {self.protocol.period_s!r} s is not a multiple of "
                              f"record_dt_ms = {self.record_dt_ms!r}; expected samples on boundaries")


# ----------------------------------------------------------------------------- the network
SYN_PARAMS = ("U_0_star", "Omega_f", "Omega_d", "rho_c", "Y_T", "Omega_c", "O_G", "Omega_G",
              "alpha", "C_pre", "release_scaling", "w_e", "w_I")
POSTSYN_PARAMS = ("C_post",)
UNIT_PARAMS = tuple(p.name for p in PARAMS if p.name not in SYN_PARAMS + POSTSYN_PARAMS + ("D_pre",))


#: parameter -> its name in the Brian2 equations (``_pre``/``_post`` suffixes are reserved there)
BRIAN_NAME = {"C_pre": "Cpre_jump", "C_post": "Cpost_jump"}


def brian_name(name: str) -> str:
    return BRIAN_NAME.get(name, name)


def param_quantity(name: str, value: float):
    """A parameter's value (in its table unit) as a Brian2 quantity."""
    return quantity(value, PARAM_UNITS[name])


def _declare(names) -> str:
    return "\n".join(f"{brian_name(n)} : {declaration(PARAM_UNITS[n])} (shared, constant)"
                     for n in names)


UNIT_EQS = """
# --- G-ChI astrocyte: metabotropic receptors, IP3, Ca2+, IP3R gate
dGamma_A/dt = O_N*Y_S_in*(1 - Gamma_A) - Omega_N*(1 + zeta*C/(C + K_KC))*Gamma_A : 1
dI/dt = (1 - ip3_clamped)*(J_beta + J_delta - J_3K - J_5P + J_ex + J_pulse) : mmolar
J_beta = O_beta*Gamma_A : mmolar/second
J_delta = O_delta/(1 + I/kappa_delta)*C**2/(C**2 + K_delta**2) : mmolar/second
J_3K = O_3K*C**4/(C**4 + K_D**4)*I/(I + K_3K) : mmolar/second
J_5P = Omega_5P*I : mmolar/second
J_ex = -F_ex/2*(1 + tanh((abs(I - I_target) - I_Theta)/omega_I))*sign(I - I_target) : mmolar/second  # exogenous IP3 flow toward I_target
I_target = I_bias + bias_amp*pulse_on : mmolar         # the bias level, raised during a bias pulse
J_pulse = ip3_amp*pulse_on : mmolar/second             # direct IP3 production (protocol)
pulse_on = int(t >= ip3_t0)*int(t < ip3_t0 + ip3_n*ip3_period)*int(t - ip3_t0 - ip3_period*floor((t - ip3_t0)/ip3_period) < ip3_pulse) : 1
ip3_amp : mmolar/second (shared, constant)             # IP3 drive during a pulse
bias_amp : mmolar (shared, constant)                   # rise of I_bias during a pulse
ip3_clamped : 1 (shared, constant)                     # 1: IP3 held at its initial value
ip3_t0 : second (shared, constant)                     # onset of the first pulse
ip3_pulse : second (shared, constant)                  # pulse length
ip3_period : second (shared, constant)                 # onset-to-onset interval
ip3_n : 1 (shared, constant)                           # number of pulses
dC/dt = J_r + J_l - J_p : mmolar
J_r = Omega_C*m_inf**3*h**3*(C_T - (1 + rho_A)*C) : mmolar/second   # IP3R release
J_l = Omega_L*(C_T - (1 + rho_A)*C) : mmolar/second                  # ER leak
J_p = O_P*C**2/(C**2 + K_P**2) : mmolar/second                       # SERCA uptake
m_inf = I/(I + d_1)*C/(C + d_5) : 1
dh/dt = (h_inf - h)/tau_h : 1
h_inf = Q_2/(Q_2 + C) : 1
tau_h = 1/(O_2*(Q_2 + C)) : second
Q_2 = d_2*(I + d_1)/(I + d_3) : mmolar
# --- gliotransmitter in the extrasynaptic space and its releasable fraction
dG_A/dt = -Omega_e*G_A : mmolar
dx_A/dt = Omega_A*(1 - x_A) : 1
n_glio : 1                                             # gliotransmitter release events so far
Y_S_in : mmolar                                        # cleft glutamate (summed from syn)
# --- Graupner-Brunel calcium and efficacy
dc/dt = -c/tau_Ca : 1
drho/dt = (-rho*(1 - rho)*(rho_star - rho) + gamma_p*(1 - rho)*f_p - gamma_d*rho*f_d)/tau : 1
f_p : 1                                                # fraction of this step with c > theta_p
f_d : 1                                                # fraction of this step with c > theta_d
# --- postsynaptic leaky integrate-and-fire neuron (held at V_reset for tau_ref after a spike)
dv/dt = lif_active*(g_L*(E_L - v) + g_syn*(E_syn - v) + I_syn + I_sic)/C_m : volt
lif_active : 1                                         # 0 while refractory (set once per step)
dg_syn/dt = -g_syn/tau_syn : siemens                   # conductance-based synapse (w_e per release)
dI_syn/dt = -I_syn/tau_syn : amp                       # current-based synapse (w_I per release)
dI_sic/dt = -I_sic/tau_sic : amp                       # slow inward current (w_sic per glio release)
t_lif : second                                         # end of the step in which v crossed V_th
n_lif : 1                                              # LIF spikes so far
"""

LIF_EVENT = "v > V_th and lif_active > 0.5"
LIF_RESET = "v = V_reset\nt_lif = t + dt\nn_lif += 1\nlif_active = 0"


SYN_EQS = """
du_S/dt = -Omega_f*u_S : 1 (clock-driven)
dx_S/dt = Omega_d*(1 - x_S) : 1 (clock-driven)
dY_S/dt = -Omega_c*Y_S : mmolar (clock-driven)
dGamma_S/dt = O_G*G_A_post*(1 - Gamma_S) - Omega_G*Gamma_S : 1 (clock-driven)
Y_S_in_post = Y_S : mmolar (summed)
U_0 : 1                                                # release probability at the last spike
r_S : 1                                                # fraction of resources released at the last spike
"""

SYN_ON_PRE = """
U_0 = (1 - Gamma_S)*U_0_star + alpha*Gamma_S
u_S += U_0*(1 - u_S)
r_S = u_S*x_S
x_S -= r_S
Y_S += rho_c*Y_T*r_S
g_syn_post += w_e*r_S
I_syn_post += w_I*r_S
"""

SYN_ON_CA = "c_post += Cpre_jump*((1 - release_scaling) + release_scaling*r_S/U_0_star)"

# Time the (exponentially decaying) c spends above each threshold within the coming step,
# and whether the LIF neuron is past its refractory period (constant within a step).
FRACTIONS = """
f_p = clip(tau_Ca*log(clip(c, 1e-30, 1e30)/theta_p)/dt, 0, 1)
f_d = clip(tau_Ca*log(clip(c, 1e-30, 1e30)/theta_d)/dt, 0, 1)
lif_active = int(t >= t_lif + tau_ref - 0.5*dt)
"""


def rho_init_values(cfg: TripartiteSimConfig) -> np.ndarray:
    """Initial efficacy of each unit (``rho_init`` repeated over the units)."""
    return np.resize(np.asarray(cfg.rho_init, dtype=np.float64), cfg.n_units)


@functools.lru_cache(maxsize=256)
def _astrocyte_rest(p: TripartiteParams) -> tuple[float, float, float]:
    from astro_sim.tripartite.reference import gchi_rest_state
    r = gchi_rest_state(p)
    return r["I"], r["C"], r["h"]


def rest_state(p: TripartiteParams) -> dict[str, float]:
    """The unstimulated steady state of every settable state variable (trace units)."""
    I, C, h = _astrocyte_rest(p)
    varying = {"I": I, "C": C, "h": h, "v": p.E_L}
    return {name: REST_FIXED.get(name, varying.get(name)) for name in STATE_RANGES}


def initial_state(cfg: TripartiteSimConfig, stim: Stimulus) -> dict[str, np.ndarray]:
    """Initial value of every state variable per unit, ``{name: (n_units,)}`` in trace units."""
    given = {k: getattr(cfg.init, k) for k in STATE_RANGES}
    rest = None if all(given[k] is not None for k in ("I", "C", "h")) else rest_state(cfg.params)
    out = {}
    for k, v in given.items():
        if v is None:
            v = rest[k] if rest is not None else REST_FIXED.get(k, cfg.params.E_L)
        out[k] = np.full(cfg.n_units, float(v))
    if stim.clamp_uM is not None:
        out["I"] = np.asarray(stim.clamp_uM, dtype=np.float64)
    return out


#: the unit group's shared constants of the IP3 drive -> the unit of the protocol's value
STIM_UNITS = {"ip3_amp": "uM/s", "ip3_t0": "s", "ip3_pulse": "s", "ip3_period": "s", "ip3_n": "1",
              "bias_amp": "uM", "ip3_clamped": "1"}


def stim_constants(stim: Stimulus) -> dict[str, float]:
    """The IP3 drive of ``stim`` as the unit group's shared constants, in SI base units."""
    d = stim.ip3
    # Pulse edges sit a quarter step early, between Runge-Kutta stages, so that no target's
    # rounding of t decides on which side of an edge a stage falls.
    values = {"ip3_amp": d["amp_uM_per_s"], "ip3_t0": d["t0_s"] - 0.25 * stim.dt_s,
              "ip3_pulse": d["pulse_s"], "ip3_period": d["period_s"], "ip3_n": d["n"],
              "bias_amp": d["bias_uM"], "ip3_clamped": 0.0 if stim.clamp_uM is None else 1.0}
    return {name: v * si_factor(STIM_UNITS[name]) for name, v in values.items()}


@dataclass
class Handles:
    """The Brian2 objects of one built network (for run_args and read-out)."""

    net: Any
    unit: Any
    syn: Any
    postsyn: Any
    unit_mon: Any | None
    syn_mon: Any | None
    duration: Any


def build_network(cfg: TripartiteSimConfig, stim: Stimulus) -> Handles:
    """Create the network for ``cfg`` (parameters set from cfg) on the current device."""
    import brian2 as b2

    n = cfg.n_units
    dt = cfg.dt_ms * b2.ms
    # Spike tables: row k of column i is unit i's k-th spike time (TimedArray indexed by k).
    pre_spike = b2.TimedArray(stim.pre * b2.second, dt=1 * b2.second, name="pre_spike")
    post_spike = b2.TimedArray(stim.post * b2.second, dt=1 * b2.second, name="post_spike")
    ns = {"pre_spike": pre_spike, "post_spike": post_spike}

    gen_eqs = "k : integer  # index of the next spike in this unit's table"
    pre_gen = b2.NeuronGroup(n, gen_eqs, threshold="t >= pre_spike(k*second, i) - 0.5*dt",
                             reset="k += 1", name="pre_gen", namespace=ns, dt=dt)
    post_gen = b2.NeuronGroup(n, gen_eqs, threshold="t >= post_spike(k*second, i) - 0.5*dt",
                              reset="k += 1", name="post_gen", namespace=ns, dt=dt)
    unit = b2.NeuronGroup(n, UNIT_EQS + _declare(UNIT_PARAMS), method="rk4", dt=dt,
                          threshold="C > C_Theta", refractory="C > C_Theta",
                          reset="G_A += rho_e*G_T*U_A*x_A\nx_A -= U_A*x_A\nn_glio += 1\n"
                                "I_sic += w_sic",
                          events={"lif_spike": LIF_EVENT}, name="unit", namespace=ns)
    unit.run_on_event("lif_spike", LIF_RESET)
    unit.run_regularly(FRACTIONS, dt=dt, when="start", name="unit_fractions")
    syn = b2.Synapses(pre_gen, unit, SYN_EQS + _declare(SYN_PARAMS),
                      on_pre={"pre": SYN_ON_PRE, "ca": SYN_ON_CA},
                      delay={"ca": cfg.params.D_pre * b2.ms},
                      method="exponential_euler", dt=dt, name="syn")
    syn.connect(j="i")
    postsyn = b2.Synapses(post_gen, unit, _declare(POSTSYN_PARAMS), on_pre="c_post += Cpost_jump",
                          dt=dt, name="postsyn")
    postsyn.connect(j="i")

    for name in UNIT_PARAMS:
        setattr(unit, brian_name(name), param_quantity(name, getattr(cfg.params, name)))
    for name, value in stim_constants(stim).items():
        setattr(unit, name, value * base_unit(STIM_UNITS[name]))
    for name in SYN_PARAMS:
        setattr(syn, brian_name(name), param_quantity(name, getattr(cfg.params, name)))
    for name in POSTSYN_PARAMS:
        setattr(postsyn, brian_name(name), param_quantity(name, getattr(cfg.params, name)))
    # Initial state: the config's values, else the rest state; rho from rho_init.
    for name, vals in initial_state(cfg, stim).items():
        group_name, unit_name, _ = STATE_RANGES[name]
        group = unit if group_name == "unit" else syn
        setattr(group, name, vals * si_factor(unit_name) * base_unit(unit_name))
    unit.rho = rho_init_values(cfg)
    unit.t_lif = -1e3 * b2.second

    rec_dt = cfg.record_dt_ms * b2.ms
    unit_vars = [v for v in cfg.record if VARIABLES[v].group == "unit"]
    syn_vars = [v for v in cfg.record if VARIABLES[v].group == "syn"]
    unit_mon = b2.StateMonitor(unit, unit_vars, record=True, dt=rec_dt, name="unit_mon") if unit_vars else None
    syn_mon = (b2.StateMonitor(syn, syn_vars, record=np.arange(n), dt=rec_dt, name="syn_mon")
               if syn_vars else None)
    objs = [pre_gen, post_gen, unit, syn, postsyn] + [m for m in (unit_mon, syn_mon) if m is not None]
    net = b2.Network(*objs)
    # One extra sample step so the last protocol boundary (t = duration) is recorded.
    duration = stim.duration_s * b2.second + rec_dt
    return Handles(net, unit, syn, postsyn, unit_mon, syn_mon, duration)


