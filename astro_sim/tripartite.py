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


def _d(symbol: str, set_name: str = _SA):
    return field(default=tp.value(set_name, symbol))


@dataclass(frozen=True)
class TripartiteParams:
    """Model parameters (plain floats in the unit given); defaults from the named sets."""

    # Tsodyks–Markram synapse, gliotransmitter-modulated (glioscience-ch18/v1)
    U_0_star: float = _d("U_0_star")        # 1, resting release probability
    Omega_f: float = _d("Omega_f")          # 1/s, facilitation decay
    Omega_d: float = _d("Omega_d")          # 1/s, resource recovery
    rho_c: float = _d("rho_c")              # 1, vesicle-to-cleft volume ratio
    Y_T: float = _d("Y_T")                  # mM, total vesicular glutamate
    Omega_c: float = _d("Omega_c")          # 1/s, cleft glutamate clearance
    O_G: float = _d("O_G")                  # 1/(uM*s), gliotransmitter binding (presynaptic)
    Omega_G: float = _d("Omega_G")          # 1/s, presynaptic receptor unbinding (0.5/min)
    alpha: float = _d("alpha")              # 1, release target under gliotransmission (0: decreasing, > U_0*: increasing)
    # G-ChI astrocyte (glioscience-ch18/v1)
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
                     "Omega_A", "Omega_e", "tau_Ca", "tau", "C_T", "U_0_star", "D_pre"):
            require_positive(f"params.{name}", getattr(self, name))
        for name in ("U_0_star", "U_A", "release_scaling"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"params.{name} = {getattr(self, name)!r}: expected a value in [0, 1]")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"params.alpha = {self.alpha!r}: expected a release probability in [0, 1]")


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
}
DEFAULT_RECORD = ("u_S", "x_S", "Gamma_S", "Y_S", "Gamma_A", "I", "C", "h", "G_A", "x_A",
                  "n_glio", "c", "rho")
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
    param_sets: tuple[str, ...] = (_SA, _GB)       # names of the parameter sets the defaults come from
    params: TripartiteParams = field(default_factory=TripartiteParams)  # model parameters
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
             "1/(uM*s)": 1 / (b2.umolar * b2.second), "ms": b2.ms, "s": b2.second}
    return table[name]


def param_quantity(name: str, value: float):
    return value * _unit(PARAM_UNITS[name])


def _brian_unit_name(name: str) -> str:
    return {"1": "1", "1/s": "hertz", "uM": "mmolar", "mM": "mmolar", "uM/s": "mmolar/second",
            "1/(uM*s)": "metre**3/mole/second", "ms": "second", "s": "second"}[PARAM_UNITS[name]]


SYN_PARAMS = ("U_0_star", "Omega_f", "Omega_d", "rho_c", "Y_T", "Omega_c", "O_G", "Omega_G",
              "alpha", "C_pre", "release_scaling")
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
dI/dt = J_beta + J_delta - J_3K - J_5P + J_ex : mmolar
J_beta = O_beta*Gamma_A : mmolar/second
J_delta = O_delta/(1 + I/kappa_delta)*C**2/(C**2 + K_delta**2) : mmolar/second
J_3K = O_3K*C**4/(C**4 + K_D**4)*I/(I + K_3K) : mmolar/second
J_5P = Omega_5P*I : mmolar/second
J_ex = ip3_amp*int(t >= ip3_t0)*int(t < ip3_t0 + ip3_n*ip3_period)*int(t - ip3_t0 - ip3_period*floor((t - ip3_t0)/ip3_period) < ip3_pulse) : mmolar/second  # exogenous IP3 production (protocol)
ip3_amp : mmolar/second (shared, constant)             # IP3 drive during a pulse
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
"""

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
"""

SYN_ON_CA = "c_post += Cpre_jump*((1 - release_scaling) + release_scaling*r_S/U_0_star)"

# Time the (exponentially decaying) c spends above each threshold within the coming step.
FRACTIONS = """
f_p = clip(tau_Ca*log(clip(c, 1e-30, 1e30)/theta_p)/dt, 0, 1)
f_d = clip(tau_Ca*log(clip(c, 1e-30, 1e30)/theta_d)/dt, 0, 1)
"""


def rho_init_values(cfg: TripartiteSimConfig) -> np.ndarray:
    """Initial efficacy of each unit (``rho_init`` repeated over the units)."""
    return np.resize(np.asarray(cfg.rho_init, dtype=np.float64), cfg.n_units)


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
            "ip3_period": d["period_s"], "ip3_n": d["n"]}



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
                          reset="G_A += rho_e*G_T*U_A*x_A\nx_A -= U_A*x_A\nn_glio += 1",
                          name="unit", namespace=ns)
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
                "ip3_period": b2.second, "ip3_n": 1}
    for name, value in stim_constants(stim).items():
        setattr(unit, name, value * si_units[name])
    for name in SYN_PARAMS:
        setattr(syn, brian_name(name), param_quantity(name, getattr(cfg.params, name)))
    for name in POSTSYN_PARAMS:
        setattr(postsyn, brian_name(name), param_quantity(name, getattr(cfg.params, name)))
    # Initial state (chapter): all zero except h = 0.9, x_S = x_A = 1; rho from the config.
    unit.h = 0.9
    unit.x_A = 1.0
    unit.rho = rho_init_values(cfg)
    syn.x_S = 1.0

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
    unit = VARIABLES[var][1]
    return values * 1e3 if unit == "uM" else values


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
        t_s, arrays = project.run(cfg, stim)
    else:  # the runtime targets; a standalone run needs neither brian2 nor a compiler
        import brian2 as b2
        b2.start_scope()
        t_s, arrays = _run_runtime(cfg, stim)
    return assemble_output(cfg, stim, t_s, arrays)
