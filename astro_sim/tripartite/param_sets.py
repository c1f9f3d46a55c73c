"""Named, versioned parameter sets of the spiking tripartite synapse and of the NEST models.

Each set is a table of :class:`~astro_sim.param_table.Param` rows (value, unit, meaning,
source). Values are plain floats in the unit named beside them, so a config stays JSON;
:mod:`astro_sim.tripartite.model` (and :mod:`astro_sim.tripartite.nest_models` for the
``nest-*`` sets) attaches the Brian2 unit when it builds the network; the tripartite
family's parameter table (:mod:`astro_sim.tripartite.params`) is made of the rows of the
sets its defaults come from; ``docs/parameters.md`` shows them. Sets are never edited in place: a
change of any value is a new version (``.../v2``), so a run's ``param_sets`` attribute
names exactly the numbers it used.

Sources
-------
``glioscience-ch18/v1``
    De Pittà & Berry (eds.), *Computational Glioscience* (Springer 2019), ch. 18 (Stimberg,
    Goodman, Brette, De Pittà: "Modeling neuron–glia interactions with the Brian 2
    simulator"; bioRxiv 198366, 2018) — the Tsodyks–Markram synapse with
    gliotransmitter-modulated release (De Pittà et al. 2011) and the G-ChI astrocyte
    (De Pittà et al. 2009, Li–Rinzel reduction), with threshold-triggered release.
``glioscience-ch18/v2``
    ``glioscience-ch18/v1`` plus the exogenous IP3 production term of the G-ChI model,
    ``J_ex = -F_ex/2 (1 + tanh((|I - I_bias| - I_Theta)/omega_I)) sign(I - I_bias)``, which
    pulls IP3 toward the bias level ``I_bias`` (Stimberg et al. 2018, example 4 of Brian2's
    ``examples/frompapers/Stimberg_et_al_2018``: F_ex = 2 uM/s, I_Theta = 0.3 uM,
    omega_I = 0.05 uM; I_bias = 0 for an unstimulated astrocyte, 1 uM for a stimulated one).
    Without it the unstimulated astrocyte has no resting state below the release threshold
    (it settles at C = 0.435 uM after one spontaneous release); with it and I_bias = 0 it
    rests at I = 0.19798 uM, C = 0.029764 uM, h = 0.91021.
``stimberg-2018-lif/v1``
    The postsynaptic leaky integrate-and-fire neuron and its excitatory conductance-based
    synapse of Stimberg et al. 2018, example 1 (COBA network; Brian2's
    ``examples/frompapers/Stimberg_et_al_2018``); the conductance jumps by ``w_e r_S`` per
    release. The current-based weight ``w_I`` and the slow inward current (``w_sic``,
    ``tau_sic``) are off (0) by default: set them to use them.
``graupner-brunel-2012-dp/v1``
    Graupner & Brunel (2012) PNAS 109:3991, "Calcium-based plasticity model explains
    sensitivity of synaptic changes to spike pattern, rate, and dendritic location",
    the "DP" parameter set (also the reference of Brian2's
    ``examples/frompapers/Graupner_Brunel_2012.py``).
``nest-astrocyte_lr_1994/v1``
    The defaults of NEST's ``astrocyte_lr_1994`` (Li & Rinzel 1994 astrocyte with the input
    and output of Nadkarni & Jung 2003): parameters and initial state as set by the model's
    constructors in ``models/astrocyte_lr_1994.cpp`` of nest/nest-simulator (commit
    84b06d8d442c, the 3.10 development line), in NEST's units (uM, ms). The rows ``IP3``,
    ``Ca_astro``, ``h_IP3R`` are the initial state. Model: :mod:`astro_sim.tripartite.nest_models`.
``nest-tsodyks-iaf_psc_exp/v1``
    The defaults of NEST's ``tsodyks_synapse`` (Tsodyks, Uziel & Markram 2000; constructor
    in ``models/tsodyks_synapse.h``) and of the exponential-current LIF neuron
    ``iaf_psc_exp`` (``models/iaf_psc_exp.cpp``), same commit. The rows ``u``, ``x``, ``y``
    and ``V_m`` are the initial state. NEST's escape-noise parameters of ``iaf_psc_exp``
    (``rho``, ``delta``; ``delta = 0`` is the deterministic threshold) are not modelled.
"""

from __future__ import annotations

from astro_rmaat.errors import ConfigError
from astro_sim.param_table import Param


_CH18 = "Computational Glioscience (2019) ch. 18 / Stimberg et al. 2018, bioRxiv 198366"
_GB = "Graupner & Brunel 2012, PNAS 109:3991, DP set"
_EX4 = ("Stimberg et al. 2018, bioRxiv 198366, example 4 (Brian2 examples/frompapers/"
        "Stimberg_et_al_2018); Computational Glioscience (2019) ch. 18")

GLIOSCIENCE_CH18_V1: tuple[Param, ...] = (
    # --- Tsodyks–Markram synapse with gliotransmitter-modulated release
    Param("U_0_star", 0.6, "1", "resting release probability U_0*", _CH18),
    Param("Omega_f", 3.33, "1/s", "facilitation (u_S) decay rate", _CH18),
    Param("Omega_d", 2.0, "1/s", "recovery rate of synaptic resources x_S", _CH18),
    Param("rho_c", 0.005, "1", "synaptic vesicle-to-cleft volume ratio", _CH18),
    Param("Y_T", 500.0, "mM", "total vesicular glutamate", _CH18),
    Param("Omega_c", 40.0, "1/s", "glutamate clearance rate from the cleft", _CH18),
    Param("O_G", 1.5, "1/(uM*s)", "gliotransmitter binding rate to presynaptic receptors", _CH18),
    Param("Omega_G", 0.5 / 60.0, "1/s", "presynaptic receptor unbinding rate (0.5/min)", _CH18),
    Param("alpha", 0.0, "1", "release-probability target under full gliotransmitter action "
          "(0: release-decreasing; > U_0*: release-increasing)", _CH18),
    # --- G-ChI astrocyte: metabotropic receptors
    Param("O_N", 0.3, "1/(uM*s)", "glutamate binding rate to astrocytic receptors", _CH18),
    Param("Omega_N", 0.5, "1/s", "astrocytic receptor unbinding rate", _CH18),
    Param("K_KC", 0.5, "uM", "Ca2+ affinity of PKC (receptor desensitisation)", _CH18),
    Param("zeta", 10.0, "1", "maximal PKC-mediated receptor desensitisation", _CH18),
    Param("O_beta", 0.5, "uM/s", "maximal receptor-driven IP3 production (set per use, 0.5-5)", _CH18),
    # --- IP3 production and degradation
    Param("O_delta", 0.6, "uM/s", "maximal PLC-delta IP3 production", _CH18),
    Param("kappa_delta", 1.5, "uM", "IP3 inhibition constant of PLC-delta", _CH18),
    Param("K_delta", 0.1, "uM", "Ca2+ affinity of PLC-delta", _CH18),
    Param("O_3K", 4.5, "uM/s", "maximal IP3 degradation by IP3-3K", _CH18),
    Param("K_D", 0.7, "uM", "Ca2+ affinity of CaMKII (IP3-3K activation)", _CH18),
    Param("K_3K", 1.0, "uM", "IP3 affinity of IP3-3K", _CH18),
    Param("Omega_5P", 0.05, "1/s", "IP3 degradation rate by IP-5P", _CH18),
    # --- Ca2+-induced Ca2+ release (Li–Rinzel)
    Param("O_P", 0.9, "uM/s", "maximal SERCA uptake rate", _CH18),
    Param("K_P", 0.05, "uM", "Ca2+ affinity of SERCA", _CH18),
    Param("C_T", 2.0, "uM", "total cell free Ca2+ content", _CH18),
    Param("rho_A", 0.18, "1", "ER-to-cytoplasm volume ratio", _CH18),
    Param("Omega_C", 6.0, "1/s", "maximal IP3R Ca2+ release rate", _CH18),
    Param("Omega_L", 0.1, "1/s", "Ca2+ leak rate from the ER", _CH18),
    Param("d_1", 0.13, "uM", "IP3 binding affinity of the IP3R", _CH18),
    Param("d_2", 1.05, "uM", "Ca2+ inactivation dissociation constant", _CH18),
    Param("d_3", 0.9434, "uM", "IP3 dissociation constant", _CH18),
    Param("d_5", 0.08, "uM", "Ca2+ activation dissociation constant", _CH18),
    Param("O_2", 0.2, "1/(uM*s)", "IP3R binding rate for Ca2+ inhibition", _CH18),
    # --- gliotransmitter release
    Param("C_Theta", 0.5, "uM", "Ca2+ threshold of gliotransmitter release", _CH18),
    Param("Omega_A", 0.6, "1/s", "gliotransmitter recycling rate", _CH18),
    Param("U_A", 0.6, "1", "gliotransmitter release probability", _CH18),
    Param("G_T", 200.0, "mM", "total vesicular gliotransmitter", _CH18),
    Param("rho_e", 6.5e-4, "1", "astrocytic vesicle-to-extracellular volume ratio", _CH18),
    Param("Omega_e", 60.0, "1/s", "gliotransmitter clearance rate", _CH18),
)

GLIOSCIENCE_CH18_V2: tuple[Param, ...] = GLIOSCIENCE_CH18_V1 + (
    # --- exogenous IP3 production (pulls I toward I_bias)
    Param("F_ex", 2.0, "uM/s", "maximal exogenous IP3 flow", _EX4),
    Param("I_Theta", 0.3, "uM", "IP3 gradient threshold of the exogenous flow", _EX4),
    Param("omega_I", 0.05, "uM", "steepness (scaling factor) of the exogenous flow", _EX4),
    Param("I_bias", 0.0, "uM", "IP3 bias level the exogenous flow pulls toward "
          "(0: unstimulated astrocyte; 1 uM: stimulated)", _EX4),
)

_EX1 = ("Stimberg et al. 2018, bioRxiv 198366, example 1 (Brian2 examples/frompapers/"
        "Stimberg_et_al_2018)")
_OFF = "off by default (0); set per use"

STIMBERG_2018_LIF_V1: tuple[Param, ...] = (
    Param("C_m", 198.0, "pF", "membrane capacitance", _EX1),
    Param("g_L", 9.99, "nS", "leak conductance", _EX1),
    Param("E_L", -60.0, "mV", "leak reversal potential (the resting potential)", _EX1),
    Param("V_th", -50.0, "mV", "firing threshold", _EX1),
    Param("V_reset", -60.0, "mV", "reset potential", _EX1),
    Param("tau_ref", 5.0, "ms", "refractory period", _EX1),
    Param("E_syn", 0.0, "mV", "excitatory synaptic reversal potential", _EX1),
    Param("tau_syn", 5.0, "ms", "synaptic (conductance and current) decay time", _EX1),
    Param("w_e", 0.05, "nS", "synaptic conductance jump per unit of released resources (x r_S)", _EX1),
    Param("w_I", 0.0, "pA", "synaptic current jump per unit of released resources (x r_S; "
          "current-based synapse)", _OFF),
    Param("w_sic", 0.0, "pA", "slow inward current jump per gliotransmitter release", _OFF),
    Param("tau_sic", 200.0, "ms", "decay time of the slow inward current",
          "project choice (slow inward currents last hundreds of ms); used when w_sic > 0"),
)

GRAUPNER_BRUNEL_2012_DP_V1: tuple[Param, ...] = (
    Param("tau_Ca", 20.0, "ms", "decay time of the synaptic calcium trace c", _GB),
    Param("C_pre", 1.0, "1", "calcium jump per presynaptic spike (scaled by r_S/U_0* when "
          "release_scaling = 1; De Pittà & Brunel 2016)", _GB),
    Param("C_post", 2.0, "1", "calcium jump per postsynaptic spike", _GB),
    Param("D_pre", 13.7, "ms", "delay of the presynaptic calcium jump", _GB),
    Param("theta_d", 1.0, "1", "depression threshold on c", _GB),
    Param("theta_p", 1.3, "1", "potentiation threshold on c", _GB),
    Param("gamma_d", 200.0, "1", "depression rate (in units of 1/tau)", _GB),
    Param("gamma_p", 321.808, "1", "potentiation rate (in units of 1/tau)", _GB),
    Param("rho_star", 0.5, "1", "unstable fixed point of the bistable cubic", _GB),
    Param("tau", 150.0, "s", "time constant of the efficacy rho", _GB),
    Param("sigma", 2.8284, "1", "noise amplitude of the published set; not used here "
          "(rho is deterministic, as in the reference pairing table with sigma = 0)", _GB),
    Param("b", 5.0, "1", "ratio w1/w0 of the two stable weights (w = w0 + rho (w1 - w0))", _GB),
)

_NEST = "nest/nest-simulator@84b06d8d442c"
_NEST_ASTRO = f"NEST models/astrocyte_lr_1994.cpp, Parameters_ defaults ({_NEST})"
_NEST_ASTRO_INIT = f"NEST models/astrocyte_lr_1994.cpp, State_ defaults ({_NEST})"
_NEST_TSO = f"NEST models/tsodyks_synapse.h, constructor defaults ({_NEST})"
_NEST_IAF = f"NEST models/iaf_psc_exp.cpp, Parameters_ defaults ({_NEST})"
_NEST_IAF_INIT = f"NEST models/iaf_psc_exp.cpp, State_ defaults (V_m = E_L) ({_NEST})"

NEST_ASTROCYTE_LR_1994_V1: tuple[Param, ...] = (
    Param("Ca_tot", 2.0, "uM", "total free astrocytic Ca2+ in terms of cytosolic volume", _NEST_ASTRO),
    Param("IP3_0", 0.16, "uM", "baseline IP3 (IP3 relaxes to it with tau_IP3)", _NEST_ASTRO),
    Param("Kd_IP3_1", 0.13, "uM", "first IP3R dissociation constant of IP3", _NEST_ASTRO),
    Param("Kd_IP3_2", 0.9434, "uM", "second IP3R dissociation constant of IP3", _NEST_ASTRO),
    Param("Kd_act", 0.08234, "uM", "IP3R dissociation constant of Ca2+ (activation)", _NEST_ASTRO),
    Param("Kd_inh", 1.049, "uM", "IP3R dissociation constant of Ca2+ (inhibition)", _NEST_ASTRO),
    Param("Km_SERCA", 0.1, "uM", "half-activation constant of the SERCA pump", _NEST_ASTRO),
    Param("SIC_scale", 1.0, "1", "scale of the slow inward current (pA per unit of ln((Ca - SIC_th)/nM))",
          _NEST_ASTRO),
    Param("SIC_th", 0.19669, "uM", "Ca2+ threshold of the slow inward current", _NEST_ASTRO),
    Param("delta_IP3", 0.0002, "uM", "IP3 jump per unit of input spike weight", _NEST_ASTRO),
    Param("k_IP3R", 0.0002, "1/(uM*ms)", "IP3R binding rate for Ca2+ inhibition", _NEST_ASTRO),
    Param("rate_IP3R", 0.006, "1/ms", "maximal Ca2+ release rate through the IP3R", _NEST_ASTRO),
    Param("rate_L", 0.00011, "1/ms", "Ca2+ leak rate from the ER to the cytosol", _NEST_ASTRO),
    Param("rate_SERCA", 0.0009, "uM/ms", "maximal Ca2+ uptake rate of the SERCA pump", _NEST_ASTRO),
    Param("ratio_ER_cyt", 0.185, "1", "ER-to-cytosol volume ratio", _NEST_ASTRO),
    Param("tau_IP3", 7142.0, "ms", "time constant of the IP3 decay toward IP3_0", _NEST_ASTRO),
    # --- initial state
    Param("IP3", 0.16, "uM", "initial IP3 (= IP3_0)", _NEST_ASTRO_INIT),
    Param("Ca_astro", 0.073, "uM", "initial cytosolic Ca2+", _NEST_ASTRO_INIT),
    Param("h_IP3R", 0.793, "1", "initial fraction of IP3R not inactivated by Ca2+", _NEST_ASTRO_INIT),
)

NEST_TSODYKS_IAF_PSC_EXP_V1: tuple[Param, ...] = (
    # --- tsodyks_synapse: x recovered, y active, z = 1 - x - y inactive resources
    Param("U", 0.5, "1", "increment of u per spike (release probability without facilitation)", _NEST_TSO),
    Param("tau_psc", 3.0, "ms", "decay time of the active fraction y (NEST: should equal the "
          "neuron's tau_syn_ex)", _NEST_TSO),
    Param("tau_rec", 800.0, "ms", "recovery time of inactive resources z into x", _NEST_TSO),
    Param("tau_fac", 0.0, "ms", "decay time of u (0: no facilitation, u = U at every spike)", _NEST_TSO),
    Param("u", 0.0, "1", "initial release probability", _NEST_TSO),
    Param("x", 1.0, "1", "initial fraction of recovered (releasable) resources", _NEST_TSO),
    Param("y", 0.0, "1", "initial fraction of active resources", _NEST_TSO),
    # --- iaf_psc_exp: leaky integrate-and-fire neuron with exponential synaptic currents
    Param("C_m", 250.0, "pF", "membrane capacitance", _NEST_IAF),
    Param("tau_m", 10.0, "ms", "membrane time constant", _NEST_IAF),
    Param("t_ref", 2.0, "ms", "refractory period (V_m held at V_reset)", _NEST_IAF),
    Param("E_L", -70.0, "mV", "resting potential", _NEST_IAF),
    Param("V_th", -55.0, "mV", "spike threshold", _NEST_IAF),
    Param("V_reset", -70.0, "mV", "reset potential", _NEST_IAF),
    Param("tau_syn_ex", 2.0, "ms", "decay time of the excitatory synaptic current", _NEST_IAF),
    Param("tau_syn_in", 2.0, "ms", "decay time of the inhibitory synaptic current", _NEST_IAF),
    Param("I_e", 0.0, "pA", "constant external input current", _NEST_IAF),
    Param("V_m", -70.0, "mV", "initial membrane potential", _NEST_IAF_INIT),
)

#: name -> parameter table. Add new versions; never change a published one.
PARAMETER_SETS: dict[str, tuple[Param, ...]] = {
    "glioscience-ch18/v1": GLIOSCIENCE_CH18_V1,
    "glioscience-ch18/v2": GLIOSCIENCE_CH18_V2,
    "stimberg-2018-lif/v1": STIMBERG_2018_LIF_V1,
    "graupner-brunel-2012-dp/v1": GRAUPNER_BRUNEL_2012_DP_V1,
    "nest-astrocyte_lr_1994/v1": NEST_ASTROCYTE_LR_1994_V1,
    "nest-tsodyks-iaf_psc_exp/v1": NEST_TSODYKS_IAF_PSC_EXP_V1,
}
DEFAULT_SYNAPSE_ASTROCYTE_SET = "glioscience-ch18/v2"
DEFAULT_PLASTICITY_SET = "graupner-brunel-2012-dp/v1"
DEFAULT_NEURON_SET = "stimberg-2018-lif/v1"


def parameter_set(name: str) -> dict[str, Param]:
    """The named set as ``{symbol: Param}``; an unknown name is a :class:`ConfigError`."""
    if name not in PARAMETER_SETS:
        raise ConfigError(f"parameter set {name!r} is unknown; expected one of: "
                          f"{', '.join(PARAMETER_SETS)}")
    return {p.name: p for p in PARAMETER_SETS[name]}


def as_markdown(name: str) -> str:
    """The set as a Markdown table (value, unit, meaning, source) for docs and reports."""
    rows = [f"| {p.name} | {p.value:g} | {p.unit} | {p.meaning} | {p.source} |"
            for p in parameter_set(name).values()]
    return "\n".join([f"**{name}**", "", "| symbol | value | unit | meaning | source |",
                      "|---|---|---|---|---|", *rows])
