"""Spiking tripartite synapse: Tsodyks–Markram release, G-ChI astrocyte, Graupner–Brunel rho.

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

Equations and parameters: ``shared/reference/astro_models.md`` and
:mod:`astro_sim.tripartite_params`. Two choices worth knowing:

* ``Gamma_S`` lives in the synapse and reads the astrocyte's ``G_A`` as a constant within a
  step (exponential Euler, as in the chapter's code): the kick from one release is ~1 % high
  at dt = 1 ms and within 0.002 of ``1 - exp(-1.95)`` at dt <= 0.1 ms.
* the Graupner–Brunel thresholds act for the exact time ``c`` spends above them within a
  step (``c`` decays exponentially between jumps, so that time is ``tau_Ca ln(c/theta)``),
  computed at the start of each step; this keeps the pairing table accurate at dt = 1 ms.

Every parameter is a ``(shared, constant)`` variable and every stimulus a TimedArray, so a
``cpp_standalone`` build is reused for any parameter values and any protocol of the same
duration (:mod:`astro_sim.tripartite_standalone`). No Brian2 random numbers are used: the
only randomness (Poisson trains) is drawn in NumPy from ``seed``, so every target sees the
same spikes.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from astro_rmaat.config import require_positive
from astro_rmaat.errors import ConfigError
from astro_sim import tripartite_params as tp
from astro_sim.spike_protocols import SpikeProtocolConfig, Stimulus, make_stimulus

_SA = tp.DEFAULT_SYNAPSE_ASTROCYTE_SET
_GB = tp.DEFAULT_PLASTICITY_SET
_LIF = tp.DEFAULT_NEURON_SET


def _d(symbol: str, set_name: str = _SA):
    return field(default=tp.value(set_name, symbol))


@dataclass(frozen=True)
class TripartiteParams:
    """Model parameters (plain floats in the unit given); defaults from the named sets."""

    # Tsodyks–Markram synapse, gliotransmitter-modulated (glioscience-ch18/v2)
    U_0_star: float = _d("U_0_star")        # 1, resting release probability
    Omega_f: float = _d("Omega_f")          # 1/s, facilitation decay
    Omega_d: float = _d("Omega_d")          # 1/s, resource recovery
    rho_c: float = _d("rho_c")              # 1, vesicle-to-cleft volume ratio
    Y_T: float = _d("Y_T")                  # mM, total vesicular glutamate
    Omega_c: float = _d("Omega_c")          # 1/s, cleft glutamate clearance
    O_G: float = _d("O_G")                  # 1/(uM*s), gliotransmitter binding (presynaptic)
    Omega_G: float = _d("Omega_G")          # 1/s, presynaptic receptor unbinding (0.5/min)
    alpha: float = _d("alpha")              # 1, release target under gliotransmission (0: decreasing, > U_0*: increasing)
    # G-ChI astrocyte (glioscience-ch18/v2)
    O_N: float = _d("O_N")                  # 1/(uM*s), glutamate binding to astrocytic receptors
    Omega_N: float = _d("Omega_N")          # 1/s, astrocytic receptor unbinding
    K_KC: float = _d("K_KC")                # uM, PKC Ca2+ affinity
    zeta: float = _d("zeta")                # 1, maximal receptor desensitisation
    O_beta: float = _d("O_beta")            # uM/s, receptor-driven IP3 production
    O_delta: float = _d("O_delta")          # uM/s, PLC-delta IP3 production
    kappa_delta: float = _d("kappa_delta")  # uM, IP3 inhibition of PLC-delta
    K_delta: float = _d("K_delta")          # uM, PLC-delta Ca2+ affinity
    O_3K: float = _d("O_3K")                # uM/s, IP3-3K degradation
    K_D: float = _d("K_D")                  # uM, CaMKII Ca2+ affinity
    K_3K: float = _d("K_3K")                # uM, IP3-3K IP3 affinity
    Omega_5P: float = _d("Omega_5P")        # 1/s, IP-5P degradation
    O_P: float = _d("O_P")                  # uM/s, SERCA maximal uptake
    K_P: float = _d("K_P")                  # uM, SERCA Ca2+ affinity
    C_T: float = _d("C_T")                  # uM, total free Ca2+
    rho_A: float = _d("rho_A")              # 1, ER-to-cytoplasm volume ratio
    Omega_C: float = _d("Omega_C")          # 1/s, IP3R release rate
    Omega_L: float = _d("Omega_L")          # 1/s, ER leak rate
    d_1: float = _d("d_1")                  # uM, IP3R IP3 affinity
    d_2: float = _d("d_2")                  # uM, Ca2+ inactivation constant
    d_3: float = _d("d_3")                  # uM, IP3 dissociation constant
    d_5: float = _d("d_5")                  # uM, Ca2+ activation constant
    O_2: float = _d("O_2")                  # 1/(uM*s), IP3R Ca2+ inhibition binding rate
    C_Theta: float = _d("C_Theta")          # uM, gliotransmitter release threshold
    Omega_A: float = _d("Omega_A")          # 1/s, gliotransmitter recycling
    U_A: float = _d("U_A")                  # 1, gliotransmitter release probability
    G_T: float = _d("G_T")                  # mM, total vesicular gliotransmitter
    rho_e: float = _d("rho_e")              # 1, astrocytic vesicle-to-extracellular ratio
    Omega_e: float = _d("Omega_e")          # 1/s, gliotransmitter clearance
    F_ex: float = _d("F_ex")                # uM/s, maximal exogenous IP3 flow (toward I_bias)
    I_Theta: float = _d("I_Theta")          # uM, IP3 gradient threshold of the exogenous flow
    omega_I: float = _d("omega_I")          # uM, steepness of the exogenous flow
    I_bias: float = _d("I_bias")            # uM, IP3 bias level (0: unstimulated astrocyte)
    # postsynaptic LIF neuron and its synapse (stimberg-2018-lif/v1)
    C_m: float = _d("C_m", _LIF)            # pF, membrane capacitance
    g_L: float = _d("g_L", _LIF)            # nS, leak conductance
    E_L: float = _d("E_L", _LIF)            # mV, leak reversal (resting) potential
    V_th: float = _d("V_th", _LIF)          # mV, firing threshold
    V_reset: float = _d("V_reset", _LIF)    # mV, reset potential
    tau_ref: float = _d("tau_ref", _LIF)    # ms, refractory period
    E_syn: float = _d("E_syn", _LIF)        # mV, synaptic reversal potential
    tau_syn: float = _d("tau_syn", _LIF)    # ms, synaptic conductance/current decay
    w_e: float = _d("w_e", _LIF)            # nS, conductance jump per released fraction r_S
    w_I: float = _d("w_I", _LIF)            # pA, current jump per released fraction r_S (current-based)
    w_sic: float = _d("w_sic", _LIF)        # pA, slow inward current jump per gliotransmitter release
    tau_sic: float = _d("tau_sic", _LIF)    # ms, slow inward current decay
    # Graupner–Brunel calcium-based efficacy (graupner-brunel-2012-dp/v1)
    tau_Ca: float = _d("tau_Ca", _GB)       # ms, calcium trace decay
    C_pre: float = _d("C_pre", _GB)         # 1, calcium jump per presynaptic release
    C_post: float = _d("C_post", _GB)       # 1, calcium jump per postsynaptic spike
    D_pre: float = _d("D_pre", _GB)         # ms, delay of the presynaptic calcium jump (build-time)
    theta_d: float = _d("theta_d", _GB)     # 1, depression threshold
    theta_p: float = _d("theta_p", _GB)     # 1, potentiation threshold
    gamma_d: float = _d("gamma_d", _GB)     # 1, depression rate (x 1/tau)
    gamma_p: float = _d("gamma_p", _GB)     # 1, potentiation rate (x 1/tau)
    rho_star: float = _d("rho_star", _GB)   # 1, unstable fixed point of the cubic
    tau: float = _d("tau", _GB)             # s, efficacy time constant
    release_scaling: float = 1.0            # 1, 1: C_pre scaled by r_S/U_0* (De Pittà & Brunel 2016); 0: plain GB

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float)) and np.isfinite(v)):
                raise ConfigError(f"params.{f.name} = {v!r}: expected a finite number")
        for name in ("Omega_f", "Omega_d", "Omega_c", "Omega_G", "Omega_N", "Omega_5P",
                     "Omega_A", "Omega_e", "tau_Ca", "tau", "C_T", "U_0_star", "D_pre",
                     "omega_I", "C_m", "g_L", "tau_syn", "tau_sic"):
            require_positive(f"params.{name}", getattr(self, name))
        for name in ("F_ex", "I_Theta", "I_bias", "tau_ref", "w_e"):
            if getattr(self, name) < 0:
                raise ConfigError(f"params.{name} = {getattr(self, name)!r}: expected a value >= 0")
        if self.V_th <= self.V_reset:
            raise ConfigError(f"params.V_th = {self.V_th!r} mV is not above params.V_reset = "
                              f"{self.V_reset!r} mV; expected a threshold above the reset")
        for name in ("U_0_star", "U_A", "release_scaling"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"params.{name} = {getattr(self, name)!r}: expected a value in [0, 1]")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"params.alpha = {self.alpha!r}: expected a release probability in [0, 1]")


#: state variable -> (group, trace unit, physical range) of the settable initial values
STATE_RANGES: dict[str, tuple[str, str, str]] = {
    "u_S": ("syn", "1", "unit"), "x_S": ("syn", "1", "unit"), "Gamma_S": ("syn", "1", "unit"),
    "Y_S": ("syn", "mM", "conc"),
    "Gamma_A": ("unit", "1", "unit"), "I": ("unit", "uM", "conc"), "C": ("unit", "uM", "cyto"),
    "h": ("unit", "1", "unit"), "G_A": ("unit", "uM", "conc"), "x_A": ("unit", "1", "unit"),
    "c": ("unit", "1", "conc"), "v": ("unit", "mV", "any"), "g_syn": ("unit", "nS", "conc"),
    "I_syn": ("unit", "pA", "any"), "I_sic": ("unit", "pA", "any"),
}


@dataclass(frozen=True)
class InitialState:
    """Initial value of each state variable (trace units); ``None``: the rest state.

    The rest state is the unstimulated steady state of the parameters in use: the stable
    root of the G-ChI astrocyte for ``I, C, h`` (:func:`astro_sim.reference.gchi_rest_state`),
    ``Gamma_A = G_A = 0``, ``x_A = x_S = 1``, ``u_S = Gamma_S = Y_S = c = 0``, the LIF
    neuron at ``E_L`` with no synaptic conductance or current. The efficacy starts at
    ``rho_init``. Under the ``ip3_clamp`` protocol ``I`` starts at (and stays at) the clamp.
    """

    u_S: float | None = None       # 1, facilitation variable
    x_S: float | None = None       # 1, available synaptic resources
    Gamma_S: float | None = None   # 1, activated presynaptic gliotransmitter receptors
    Y_S: float | None = None       # mM, cleft glutamate
    Gamma_A: float | None = None   # 1, activated astrocytic receptors
    I: float | None = None         # uM, IP3
    C: float | None = None         # uM, cytosolic Ca2+
    h: float | None = None         # 1, IP3R de-inactivation
    G_A: float | None = None       # uM, extrasynaptic gliotransmitter
    x_A: float | None = None       # 1, releasable gliotransmitter fraction
    c: float | None = None         # 1, Graupner–Brunel calcium
    v: float | None = None         # mV, postsynaptic membrane potential
    g_syn: float | None = None     # nS, postsynaptic conductance
    I_syn: float | None = None     # pA, postsynaptic synaptic current
    I_sic: float | None = None     # pA, slow inward current

    def __post_init__(self) -> None:
        for name, (_, unit, kind) in STATE_RANGES.items():
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise ConfigError(f"init.{name} = {v!r}: expected a finite number (or null for "
                                  "the rest state)")
            if kind == "unit" and not 0 <= v <= 1:
                raise ConfigError(f"init.{name} = {v!r}: expected a fraction in [0, 1]")
            if kind in ("conc", "cyto") and v < 0:
                raise ConfigError(f"init.{name} = {v!r} {unit}: expected a non-negative "
                                  "concentration")


#: Brian2 unit of each parameter (the unit column of the parameter tables).
PARAM_UNITS: dict[str, str] = {
    **{p.name: p.unit for s in tp.PARAMETER_SETS.values() for p in s},
    "release_scaling": "1",
}

#: recordable variables -> (owner group, unit column of traces)
VARIABLES: dict[str, tuple[str, str]] = {
    "u_S": ("syn", "1"), "x_S": ("syn", "1"), "r_S": ("syn", "1"), "Gamma_S": ("syn", "1"),
    "Y_S": ("syn", "mM"),
    "Gamma_A": ("unit", "1"), "I": ("unit", "uM"), "C": ("unit", "uM"), "h": ("unit", "1"),
    "G_A": ("unit", "uM"), "x_A": ("unit", "1"), "n_glio": ("unit", "1"),
    "c": ("unit", "1"), "rho": ("unit", "1"),
    "v": ("unit", "mV"), "g_syn": ("unit", "nS"), "I_syn": ("unit", "pA"),
    "I_sic": ("unit", "pA"), "n_lif": ("unit", "1"),
}
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
    param_sets: tuple[str, ...] = (_SA, _LIF, _GB)  # names of the parameter sets the defaults come from
    params: TripartiteParams = field(default_factory=TripartiteParams)  # model parameters
    init: InitialState = field(default_factory=InitialState)  # initial state (null: the rest state)
    protocol: SpikeProtocolConfig = field(default_factory=SpikeProtocolConfig)  # stimulation
    record: tuple[str, ...] = DEFAULT_RECORD       # variables written to traces.parquet
    standalone_dir: str = ""                       # cpp_standalone build cache ("" = per-user cache)

    def __post_init__(self) -> None:
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
            tp.parameter_set(name)
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
def _unit(name: str):
    import brian2 as b2
    table = {"1": 1, "1/s": b2.Hz, "uM": b2.umolar, "mM": b2.mmolar, "uM/s": b2.umolar / b2.second,
             "1/(uM*s)": 1 / (b2.umolar * b2.second), "ms": b2.ms, "s": b2.second,
             "mV": b2.mV, "nS": b2.nS, "pF": b2.pF, "pA": b2.pA}
    return table[name]


def param_quantity(name: str, value: float):
    return value * _unit(PARAM_UNITS[name])


def _brian_unit_name(name: str) -> str:
    return {"1": "1", "1/s": "hertz", "uM": "mmolar", "mM": "mmolar", "uM/s": "mmolar/second",
            "1/(uM*s)": "metre**3/mole/second", "ms": "second", "s": "second",
            "mV": "volt", "nS": "siemens", "pF": "farad", "pA": "amp"}[PARAM_UNITS[name]]


SYN_PARAMS = ("U_0_star", "Omega_f", "Omega_d", "rho_c", "Y_T", "Omega_c", "O_G", "Omega_G",
              "alpha", "C_pre", "release_scaling", "w_e", "w_I")
POSTSYN_PARAMS = ("C_post",)
UNIT_PARAMS = tuple(f.name for f in dataclasses.fields(TripartiteParams)
                    if f.name not in SYN_PARAMS + POSTSYN_PARAMS + ("D_pre",))


#: parameter -> its name in the Brian2 equations (``_pre``/``_post`` suffixes are reserved there)
BRIAN_NAME = {"C_pre": "Cpre_jump", "C_post": "Cpost_jump"}


def brian_name(name: str) -> str:
    return BRIAN_NAME.get(name, name)


def _declare(names) -> str:
    return "\n".join(f"{brian_name(n)} : {_brian_unit_name(n)} (shared, constant)" for n in names)


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


#: trace unit -> factor to Brian2's SI base units (concentrations: mM = mol/m^3)
TRACE_TO_SI = {"1": 1.0, "uM": 1e-3, "mM": 1.0, "mV": 1e-3, "nS": 1e-9, "pA": 1e-12}


@functools.lru_cache(maxsize=256)
def _astrocyte_rest(p: TripartiteParams) -> tuple[float, float, float]:
    from astro_sim.reference import gchi_rest_state
    r = gchi_rest_state(p)
    return r["I"], r["C"], r["h"]


def rest_state(p: TripartiteParams) -> dict[str, float]:
    """The unstimulated steady state of every settable state variable (trace units)."""
    I, C, h = _astrocyte_rest(p)
    return {"u_S": 0.0, "x_S": 1.0, "Gamma_S": 0.0, "Y_S": 0.0, "Gamma_A": 0.0, "I": I, "C": C,
            "h": h, "G_A": 0.0, "x_A": 1.0, "c": 0.0, "v": p.E_L, "g_syn": 0.0, "I_syn": 0.0,
            "I_sic": 0.0}


def initial_state(cfg: TripartiteSimConfig, stim: Stimulus) -> dict[str, np.ndarray]:
    """Initial value of every state variable per unit, ``{name: (n_units,)}`` in trace units."""
    given = {k: getattr(cfg.init, k) for k in STATE_RANGES}
    rest = None if all(given[k] is not None for k in ("I", "C", "h")) else rest_state(cfg.params)
    out = {}
    for k, v in given.items():
        if v is None:
            v = rest[k] if rest is not None else _REST_FIXED.get(k, cfg.params.E_L)
        out[k] = np.full(cfg.n_units, float(v))
    if stim.clamp_uM is not None:
        out["I"] = np.asarray(stim.clamp_uM, dtype=np.float64)
    return out


#: rest values that do not depend on the parameters (all but I, C, h and v)
_REST_FIXED = {"u_S": 0.0, "x_S": 1.0, "Gamma_S": 0.0, "Y_S": 0.0, "Gamma_A": 0.0, "G_A": 0.0,
               "x_A": 1.0, "c": 0.0, "g_syn": 0.0, "I_syn": 0.0, "I_sic": 0.0}


def validate(cfg: TripartiteSimConfig) -> None:
    """Check what only the protocol arrays reveal (spike times inside the run, capacity)."""
    make_stimulus(cfg.protocol, cfg.n_units, cfg.dt_ms * 1e-3, cfg.seed, cfg.max_spikes)


def stim_constants(stim: Stimulus) -> dict[str, float]:
    """The IP3 drive of ``stim`` as the unit group's shared constants, in SI base units."""
    d = stim.ip3
    # Pulse edges sit a quarter step early, between Runge-Kutta stages, so that no target's
    # rounding of t decides on which side of an edge a stage falls.
    return {"ip3_amp": d["amp_uM_per_s"] * 1e-3, "ip3_t0": d["t0_s"] - 0.25 * stim.dt_s,
            "ip3_pulse": d["pulse_s"],
            "ip3_period": d["period_s"], "ip3_n": d["n"], "bias_amp": d["bias_uM"] * 1e-3,
            "ip3_clamped": 0.0 if stim.clamp_uM is None else 1.0}



@dataclass
class Handles:
    """The Brian2 objects of one built network (for run_args and read-out)."""

    net: Any
    unit: Any
    syn: Any
    postsyn: Any
    pre_spike: Any
    post_spike: Any
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
    si_units = {"ip3_amp": b2.mmolar / b2.second, "ip3_t0": b2.second, "ip3_pulse": b2.second,
                "ip3_period": b2.second, "ip3_n": 1, "bias_amp": b2.mmolar, "ip3_clamped": 1}
    for name, value in stim_constants(stim).items():
        setattr(unit, name, value * si_units[name])
    for name in SYN_PARAMS:
        setattr(syn, brian_name(name), param_quantity(name, getattr(cfg.params, name)))
    for name in POSTSYN_PARAMS:
        setattr(postsyn, brian_name(name), param_quantity(name, getattr(cfg.params, name)))
    # Initial state: the config's values, else the rest state; rho from rho_init.
    si_unit = {"1": 1, "uM": b2.mmolar, "mM": b2.mmolar, "mV": b2.volt, "nS": b2.siemens,
               "pA": b2.amp}
    for name, vals in initial_state(cfg, stim).items():
        group_name, unit_name, _ = STATE_RANGES[name]
        group = unit if group_name == "unit" else syn
        setattr(group, name, vals * TRACE_TO_SI[unit_name] * si_unit[unit_name])
    unit.rho = rho_init_values(cfg)
    unit.t_lif = -1e3 * b2.second

    rec_dt = cfg.record_dt_ms * b2.ms
    unit_vars = [v for v in cfg.record if VARIABLES[v][0] == "unit"]
    syn_vars = [v for v in cfg.record if VARIABLES[v][0] == "syn"]
    unit_mon = b2.StateMonitor(unit, unit_vars, record=True, dt=rec_dt, name="unit_mon") if unit_vars else None
    syn_mon = (b2.StateMonitor(syn, syn_vars, record=np.arange(n), dt=rec_dt, name="syn_mon")
               if syn_vars else None)
    objs = [pre_gen, post_gen, unit, syn, postsyn] + [m for m in (unit_mon, syn_mon) if m is not None]
    net = b2.Network(*objs)
    # One extra sample step so the last protocol boundary (t = duration) is recorded.
    duration = stim.duration_s * b2.second + rec_dt
    return Handles(net, unit, syn, postsyn, pre_spike, post_spike, unit_mon, syn_mon, duration)


def _to_trace_unit(var: str, values: np.ndarray) -> np.ndarray:
    """SI values (mM for concentrations) -> the unit named in VARIABLES."""
    return values / TRACE_TO_SI[VARIABLES[var][1]]


def assemble_output(cfg: TripartiteSimConfig, stim: Stimulus, t_s: np.ndarray,
                    arrays: dict[str, np.ndarray]) -> "SimOutput":
    """Monitor arrays ``{var: (n_t, n_units) SI}`` -> SimOutput (long-format traces, samples)."""
    from astro_sim.simulate import SimOutput

    n_t = t_s.size
    frames = []
    for var in cfg.record:
        vals = _to_trace_unit(var, np.asarray(arrays[var], dtype=np.float64).reshape(n_t, cfg.n_units))
        frames.append(pd.DataFrame({
            "t_s": np.repeat(t_s, cfg.n_units), "variable": var,
            "element": np.tile(np.arange(cfg.n_units, dtype=np.int64), n_t),
            "value": vals.ravel(), "unit": VARIABLES[var][1]}))
    traces = pd.concat(frames, ignore_index=True)
    rec_dt = cfg.record_dt_ms * 1e-3
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
    h = build_network(cfg, stim)
    h.net.run(h.duration, namespace={})
    mons = [m for m in (h.unit_mon, h.syn_mon) if m is not None]
    t_s = np.asarray(mons[0].t / b2.second)
    arrays = {}
    for mon in mons:
        for var in mon.record_variables:
            arrays[var] = np.asarray(getattr(mon, var + "_")).T  # (n_t, n_units), SI
    return t_s, arrays


def run(cfg: TripartiteSimConfig) -> "SimOutput":
    """Simulate ``cfg`` in memory (no run directory); same config -> same numbers."""
    if cfg.target not in TARGETS:
        raise ConfigError(f"target = {cfg.target!r}: expected one of {', '.join(TARGETS)}")
    stim = make_stimulus(cfg.protocol, cfg.n_units, cfg.dt_ms * 1e-3, cfg.seed, cfg.max_spikes)
    if cfg.target == "cpp_standalone":
        from astro_sim import tripartite_standalone as sa
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
