"""NEST's ``astrocyte_lr_1994`` and ``tsodyks_synapse`` -> ``iaf_psc_exp``, written in Brian2.

Two small models whose equations are those NEST documents for these models, so that they can
be run on NEST's own test protocols and compared with NEST's reference traces
(:mod:`astro_sim.tripartite.nest_parity`). NEST itself is not needed. Parameters come from the sets
``nest-astrocyte_lr_1994/v1`` and ``nest-tsodyks-iaf_psc_exp/v1``
(:mod:`astro_sim.tripartite.param_sets`), in NEST's units (uM, ms, mV, pA, pF).

``astrocyte_lr_1994``
    Li & Rinzel (1994) Ca2+ dynamics with Nadkarni & Jung's (2003) input and output: IP3
    relaxes to ``IP3_0`` with ``tau_IP3`` and jumps by ``delta_IP3 * weight`` per input
    spike; the slow inward current ``I_SIC`` is ``SIC_scale ln((Ca - SIC_th)/nM)`` pA above
    ``SIC_th + 1 nM``. NEST keeps Ca2+ within ``[0, Ca_tot]``, inside the right-hand side and
    after each step; so does this model. Integrated with RK4 at ``dt_ms``.
``tsodyks_iaf_psc_exp``
    A ``tsodyks_synapse`` (Tsodyks, Uziel & Markram 2000: recovered ``x``, active ``y``,
    inactive ``z = 1 - x - y`` resources, release probability ``u``) onto an ``iaf_psc_exp``
    neuron. Each spike releases ``u x`` (after ``u += U (1 - u)``), moves it from ``x`` to
    ``y`` and makes the neuron's synaptic current jump by ``weight u x`` pA (excitatory for
    ``weight >= 0``, inhibitory otherwise, as NEST routes it). Between spikes the synapse and
    the neuron are integrated exactly (linear equations), as NEST does.

Timing follows NEST's grid. ``spike_times_ms`` are the times at which spikes *arrive* at the
target (in NEST: the presynaptic spike time plus the delays on the way); NEST adds an
arriving spike at the end of the step that ends at its arrival time. Brian2 applies a
synaptic event after the state update of the step in which the spike occurs, so each spike
is generated one step before its arrival. Traces are sampled every step, at ``t = k dt``:
the state at the end of the step that ends at ``t``, which is what NEST's multimeter
reports at ``t``. The neuron is held at ``V_reset`` for ``t_ref`` after the end of the step
in which it crossed ``V_th`` (NEST's refractory count). Potentials are absolute here (NEST
stores ``V_th`` and ``V_reset`` relative to ``E_L``, so there changing ``E_L`` alone moves
them; here it does not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from astro_rmaat.config import require_positive
from astro_rmaat.errors import ConfigError
from astro_sim.param_table import quantity
from astro_sim.tripartite import param_sets as tp

#: model -> the parameter set its defaults come from
MODEL_SETS = {"astrocyte_lr_1994": "nest-astrocyte_lr_1994/v1",
              "tsodyks_iaf_psc_exp": "nest-tsodyks-iaf_psc_exp/v1"}
TARGETS = ("numpy", "cython")

ASTROCYTE_LR_1994_EQS = """
dIP3/dt = (IP3_0 - IP3)/tau_IP3 : mmolar                  # IP3 (jumps by delta_IP3*w per input spike)
dCa_astro/dt = J_channel - J_pump + J_leak : mmolar       # cytosolic Ca2+
dh_IP3R/dt = alpha_h*(1 - h_IP3R) - beta_h*h_IP3R : 1     # fraction of IP3R not inactivated by Ca2+
Ca = clip(Ca_astro, 0*mmolar, Ca_tot) : mmolar            # Ca2+ seen by the fluxes (NEST keeps it in [0, Ca_tot])
Ca_ER = (Ca_tot - Ca)/ratio_ER_cyt : mmolar               # Ca2+ in the ER
m_inf = IP3/(IP3 + Kd_IP3_1) : 1                          # IP3R activation by IP3
n_inf = Ca/(Ca + Kd_act) : 1                              # IP3R activation by Ca2+
J_channel = ratio_ER_cyt*rate_IP3R*m_inf**3*n_inf**3*h_IP3R**3*(Ca_ER - Ca) : mmolar/second  # IP3R release
J_pump = rate_SERCA*Ca**2/(Km_SERCA**2 + Ca**2) : mmolar/second                              # SERCA uptake
J_leak = ratio_ER_cyt*rate_L*(Ca_ER - Ca) : mmolar/second                                    # ER leak
alpha_h = k_IP3R*Kd_inh*(IP3 + Kd_IP3_1)/(IP3 + Kd_IP3_2) : hertz   # IP3R de-inactivation rate
beta_h = k_IP3R*Ca : hertz                                          # IP3R inactivation rate
I_SIC = SIC_scale*log(clip((Ca_astro - SIC_th)/nmolar, 1, inf))*pA : amp  # slow inward current (0 below SIC_th + 1 nM)
"""
ASTROCYTE_CLAMP = "Ca_astro = clip(Ca_astro, 0*mmolar, Ca_tot)"   # NEST, after every step
ASTROCYTE_INPUT = "IP3_post += delta_IP3*w"
ASTROCYTE_STATE = ("IP3", "Ca_astro", "h_IP3R")

IAF_PSC_EXP_EQS = """
dV_m/dt = (E_L - V_m)/tau_m + (I_syn_ex + I_syn_in + I_e)/C_m : volt (unless refractory)  # membrane potential
dI_syn_ex/dt = -I_syn_ex/tau_syn_ex : amp                 # excitatory synaptic current
dI_syn_in/dt = -I_syn_in/tau_syn_in : amp                 # inhibitory synaptic current
"""
IAF_PSC_EXP_THRESHOLD = "V_m >= V_th"
IAF_PSC_EXP_RESET = "V_m = V_reset"
# lastspike is the start of the step in which V_m crossed V_th; NEST counts t_ref from its end
IAF_PSC_EXP_REFRACTORY = "timestep(t - lastspike, dt) <= timestep(t_ref, dt)"

TSODYKS_SYNAPSE_EQS = """
w : amp                                                   # weight: current jump per unit of released resources
dy/dt = -y/tau_psc : 1 (event-driven)                     # active resources
dz/dt = y/tau_psc - z/tau_rec : 1 (event-driven)          # inactive resources, recovering into x = 1 - y - z
r : 1                                                     # resources released by the last spike
"""
# x = 1 - y - z is written out in the spike code rather than declared as a subexpression:
# Brian2 2.9's Cython target evaluated such a subexpression before the event-driven update of
# y and z (each spike released from the x left by the previous one), its numpy target after.
TSODYKS_FACILITATION = "du/dt = -u/tau_fac : 1 (event-driven)  # release probability\n"
TSODYKS_NO_FACILITATION = "u : 1  # release probability (tau_fac = 0: U at every spike)\n"
TSODYKS_FORGET = "u = 0  # tau_fac = 0: u has decayed by the next spike\n"
TSODYKS_ON_SPIKE = """u += U*(1 - u)                        # facilitation
r = u*(1 - y - z)                     # released fraction u x of the recovered resources x
y += r                                # from x to y
I_syn_ex_post += int(w >= 0*amp)*w*r  # NEST: weight >= 0 excitatory, < 0 inhibitory
I_syn_in_post += int(w < 0*amp)*w*r
"""
TSODYKS_STATE = ("u", "x", "y")   # initial-state rows (x enters as z = 1 - x - y)
IAF_PSC_EXP_STATE = ("V_m",)


# NEST's ranges for these parameters (its BadProperty checks), by kind
_POSITIVE = ("Ca_tot", "Kd_act", "Kd_IP3_1", "Kd_IP3_2", "Km_SERCA", "ratio_ER_cyt", "SIC_scale",
             "tau_IP3", "tau_psc", "tau_rec", "C_m", "tau_m", "tau_syn_ex", "tau_syn_in")
_NON_NEGATIVE = ("IP3_0", "Kd_inh", "delta_IP3", "k_IP3R", "SIC_th", "rate_L", "rate_IP3R",
                 "rate_SERCA", "IP3", "Ca_astro", "tau_fac", "t_ref")
_FRACTION = ("h_IP3R", "U", "u", "x", "y")


@dataclass(frozen=True)
class NestModelConfig:
    model: Literal["astrocyte_lr_1994", "tsodyks_iaf_psc_exp"] = "astrocyte_lr_1994"  # which NEST model
    dt_ms: float = 0.1                       # ms, NEST's resolution: integration and sampling step
    duration_ms: float = 100.0               # ms, simulated time (a multiple of dt_ms)
    spike_times_ms: tuple[float, ...] = ()   # ms, arrival times of input spikes at the target (on the dt grid)
    weight: float = 1.0                      # NEST connection weight: IP3 jump delta_IP3*weight; PSC jump weight*u*x pA
    params: dict[str, float] = field(default_factory=dict)  # overrides of the set's values (same names, same units)
    target: Literal["numpy", "cython"] = "numpy"  # Brian2 code generation target

    def __post_init__(self) -> None:
        if self.model not in MODEL_SETS:
            raise ConfigError(f"model = {self.model!r}: expected one of {', '.join(MODEL_SETS)}")
        if self.target not in TARGETS:
            raise ConfigError(f"target = {self.target!r}: expected one of {', '.join(TARGETS)}")
        require_positive("dt_ms", self.dt_ms, "ms")
        require_positive("duration_ms", self.duration_ms, "ms")
        n = self.duration_ms / self.dt_ms
        if abs(n - round(n)) > 1e-6:
            raise ConfigError(f"duration_ms = {self.duration_ms!r}: expected a multiple of "
                              f"dt_ms = {self.dt_ms!r}")
        steps = []
        for k, t in enumerate(self.spike_times_ms):
            s = t / self.dt_ms
            if not (isinstance(t, (int, float)) and abs(s - round(s)) <= 1e-6
                    and 1 <= round(s) < round(n)):
                raise ConfigError(f"spike_times_ms[{k}] = {t!r}: expected a multiple of dt_ms = "
                                  f"{self.dt_ms!r} inside (0, {self.duration_ms!r}) ms")
            steps.append(round(s))
        if len(set(steps)) < len(steps):
            raise ConfigError(f"spike_times_ms = {list(self.spike_times_ms)!r}: two spikes arrive "
                              "in the same step; expected at most one per step")
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight)):
            raise ConfigError(f"weight = {self.weight!r}: expected a finite number")
        if self.model == "astrocyte_lr_1994" and self.weight < 0:
            raise ConfigError(f"weight = {self.weight!r}: expected >= 0 (astrocyte_lr_1994 takes "
                              "excitatory input only, as in NEST)")
        _check_params(self.param_set, self.values())

    @property
    def param_set(self) -> str:
        return MODEL_SETS[self.model]

    def values(self) -> dict[str, float]:
        """Every parameter and initial value: the set's, with ``params`` applied."""
        rows = tp.parameter_set(self.param_set)
        unknown = sorted(set(self.params) - set(rows))
        if unknown:
            raise ConfigError(f"params.{unknown[0]} is not a parameter of {self.param_set}; "
                              f"expected one of {', '.join(rows)}")
        return {name: float(self.params.get(name, row.value)) for name, row in rows.items()}


def _check_params(set_name: str, v: dict[str, float]) -> None:
    units = {name: row.unit for name, row in tp.parameter_set(set_name).items()}
    for name, value in v.items():
        if not math.isfinite(value):
            raise ConfigError(f"params.{name} = {value!r}: expected a finite number")
        if name in _POSITIVE:
            require_positive(f"params.{name}", value, units[name])
        if name in _NON_NEGATIVE and value < 0:
            raise ConfigError(f"params.{name} = {value!r} {units[name]}: expected a value >= 0")
        if name in _FRACTION and not 0 <= value <= 1:
            raise ConfigError(f"params.{name} = {value!r}: expected a value in [0, 1]")
    if "V_th" in v and v["V_reset"] >= v["V_th"]:
        raise ConfigError(f"params.V_reset = {v['V_reset']!r} mV is not below params.V_th = "
                          f"{v['V_th']!r} mV; expected a reset below the threshold")
    if "x" in v and v["x"] + v["y"] > 1:
        raise ConfigError(f"params.x + params.y = {v['x'] + v['y']!r}: expected at most 1 "
                          "(x, y and z = 1 - x - y are fractions of the same resources)")
    # the exact solutions used here divide by these differences (NEST treats the equal case apart)
    for a, b in (("tau_psc", "tau_rec"), ("tau_syn_ex", "tau_m"), ("tau_syn_in", "tau_m")):
        if a in v and abs(v[a] - v[b]) <= 1e-6 * v[b]:
            raise ConfigError(f"params.{a} = {v[a]!r} ms equals params.{b}; expected different "
                              "time constants (this model's exact solution is singular there)")


def _namespace(cfg: NestModelConfig, state: tuple[str, ...]) -> dict:
    """The parameters (not the initial state) as Brian2 quantities."""
    rows = tp.parameter_set(cfg.param_set)
    return {name: quantity(value, rows[name].unit)
            for name, value in cfg.values().items() if name not in state}


def _spike_source(cfg: NestModelConfig, dt):
    import brian2 as b2
    # generated one step before arrival: Brian2 applies the event after that step's update
    steps = np.rint(np.asarray(cfg.spike_times_ms, dtype=np.float64) / cfg.dt_ms).astype(np.int64)
    return b2.SpikeGeneratorGroup(1, np.zeros(steps.size, dtype=np.int64), (steps - 1) * dt,
                                  dt=dt, name="spikes")


def _astrocyte_network(cfg: NestModelConfig, dt):
    import brian2 as b2
    ns = _namespace(cfg, ASTROCYTE_STATE)
    v = cfg.values()
    astro = b2.NeuronGroup(1, ASTROCYTE_LR_1994_EQS, method="rk4", dt=dt, namespace=ns,
                           name="astrocyte")
    astro.run_regularly(ASTROCYTE_CLAMP, when="after_groups", name="astrocyte_clamp")
    astro.IP3 = v["IP3"] * b2.umolar
    astro.Ca_astro = v["Ca_astro"] * b2.umolar
    astro.h_IP3R = v["h_IP3R"]
    src = _spike_source(cfg, dt)
    syn = b2.Synapses(src, astro, "w : 1", on_pre=ASTROCYTE_INPUT, dt=dt, namespace=ns,
                      name="astrocyte_input")
    syn.connect()
    syn.w = cfg.weight
    mon = b2.StateMonitor(astro, ["IP3", "Ca_astro", "h_IP3R", "I_SIC"], record=0, dt=dt)
    columns = {"IP3_uM": ("IP3", b2.umolar), "Ca_astro_uM": ("Ca_astro", b2.umolar),
               "h_IP3R": ("h_IP3R", 1), "I_SIC_pA": ("I_SIC", b2.pA)}
    return [astro, src, syn, mon], mon, columns


def _tsodyks_network(cfg: NestModelConfig, dt):
    import brian2 as b2
    ns = _namespace(cfg, TSODYKS_STATE + IAF_PSC_EXP_STATE)
    v = cfg.values()
    neuron = b2.NeuronGroup(1, IAF_PSC_EXP_EQS, threshold=IAF_PSC_EXP_THRESHOLD,
                            reset=IAF_PSC_EXP_RESET, refractory=IAF_PSC_EXP_REFRACTORY,
                            method="exact", dt=dt, namespace=ns, name="iaf_psc_exp")
    neuron.V_m = v["V_m"] * b2.mV
    src = _spike_source(cfg, dt)
    facilitates = v["tau_fac"] > 0
    eqs = TSODYKS_SYNAPSE_EQS + (TSODYKS_FACILITATION if facilitates else TSODYKS_NO_FACILITATION)
    on_pre = TSODYKS_ON_SPIKE if facilitates else TSODYKS_FORGET + TSODYKS_ON_SPIKE
    syn = b2.Synapses(src, neuron, eqs, on_pre=on_pre, dt=dt, namespace=ns,
                      name="tsodyks_synapse")
    syn.connect()
    syn.w = cfg.weight * b2.pA
    syn.u, syn.y, syn.z = v["u"], v["y"], 1.0 - v["x"] - v["y"]
    mon = b2.StateMonitor(neuron, ["V_m", "I_syn_ex", "I_syn_in"], record=0, dt=dt)
    columns = {"V_m_mV": ("V_m", b2.mV), "I_syn_ex_pA": ("I_syn_ex", b2.pA),
               "I_syn_in_pA": ("I_syn_in", b2.pA)}
    return [neuron, src, syn, mon], mon, columns


def run(cfg: NestModelConfig) -> pd.DataFrame:
    """Simulate ``cfg``: one row per step ``t_ms = k dt`` (k = 0 .. duration/dt - 1).

    Columns carry their unit (``t_ms``, ``IP3_uM``, ``Ca_astro_uM``, ``h_IP3R``, ``I_SIC_pA``;
    or ``V_m_mV``, ``I_syn_ex_pA``, ``I_syn_in_pA``); ``attrs`` name the model, its parameter
    set, the values used and dt.
    """
    import brian2 as b2

    b2.prefs.codegen.target = cfg.target
    dt = cfg.dt_ms * b2.ms
    build = _astrocyte_network if cfg.model == "astrocyte_lr_1994" else _tsodyks_network
    objs, mon, columns = build(cfg, dt)
    net = b2.Network(*objs)
    net.run(round(cfg.duration_ms / cfg.dt_ms) * dt, namespace={})
    steps = np.arange(len(mon.t))
    out = pd.DataFrame({"t_ms": steps * cfg.dt_ms})
    for col, (var, unit) in columns.items():
        out[col] = np.asarray(getattr(mon, var)[0] / unit, dtype=np.float64)
    out.attrs = {"model": cfg.model, "param_set": cfg.param_set, "params": cfg.values(),
                 "dt_ms": cfg.dt_ms, "weight": cfg.weight, "target": cfg.target}
    return out
