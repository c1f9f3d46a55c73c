"""The tripartite family's two tables, its parameters and its state variables, and the config
tables built from them.

:data:`PARAMS` is the one table of the model parameters: the rows of the parameter sets the
defaults come from (:data:`DEFAULT_SETS`, in that order; :mod:`astro_sim.tripartite.param_sets`
holds the values, units, meanings and sources) without the rows the model does not use
(:data:`UNUSED`), and ``release_scaling``. :class:`TripartiteParams` (the ``params`` table of a
config: its fields, their order and defaults), the Brian2 quantities and declarations
(:mod:`astro_sim.tripartite.model`), the SI run arguments of a ``cpp_standalone`` binary
(:mod:`astro_sim.tripartite.standalone`) and ``docs/parameters.md`` derive from it.

:data:`VARIABLES` is the one table of the recordable variables (Brian2 group, trace unit,
whether and within which range the initial value can be set, the value at rest, meaning);
:class:`InitialState` (the ``init`` table of a config) has a field for each settable one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from astro_rmaat.config import require_positive
from astro_rmaat.errors import ConfigError
from astro_sim.param_table import Param, params_dataclass, table_dataclass
from astro_sim.tripartite import param_sets as ps

#: the parameter sets the defaults come from, in the order of the config's fields
DEFAULT_SETS = (ps.DEFAULT_SYNAPSE_ASTROCYTE_SET, ps.DEFAULT_NEURON_SET, ps.DEFAULT_PLASTICITY_SET)
#: rows of those sets this model does not use (Graupner–Brunel's noise and weight ratio)
UNUSED = ("sigma", "b")

PARAMS: tuple[Param, ...] = (
    *(p for name in DEFAULT_SETS for p in ps.PARAMETER_SETS[name] if p.name not in UNUSED),
    Param("release_scaling", 1.0, "1", "1: the presynaptic calcium jump C_pre is scaled by "
          "r_S/U_0*; 0: plain Graupner–Brunel (C_pre per presynaptic spike)",
          "model switch; the scaled jump follows De Pittà & Brunel 2016"),
)
#: parameter -> its unit (a key of astro_sim.param_table.UNITS)
PARAM_UNITS: dict[str, str] = {p.name: p.unit for p in PARAMS}


@params_dataclass(PARAMS)
class TripartiteParams:
    """Model parameters: one field per row of :data:`PARAMS` (a plain float in the row's unit)."""

    def __post_init__(self) -> None:
        for row in PARAMS:
            v = getattr(self, row.name)
            if not (isinstance(v, (int, float)) and np.isfinite(v)):
                raise ConfigError(f"params.{row.name} = {v!r}: expected a finite number")
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


def describe() -> list[dict[str, str]]:
    """The parameter table: name, default value, unit, meaning, source."""
    return [{"name": p.name, "value": repr(p.value), "unit": p.unit, "meaning": p.meaning,
             "source": p.source} for p in PARAMS]


class Variable(NamedTuple):
    group: str              # Brian2 group holding it: "syn" (the synapse) or "unit" (the rest)
    unit: str               # unit of its traces and of its initial value
    init: str | None        # settable initial value, its range: "unit" [0, 1], "conc" >= 0,
                            # "cyto" >= 0 (and <= C_T/(1 + rho_A), checked by the config),
                            # "any"; None: not settable
    rest: float | None      # value at rest; None: depends on the parameters (or not settable)
    meaning: str


#: recordable variables, in the order of the config's ``record`` and ``init`` tables
VARIABLES: dict[str, Variable] = {
    "u_S": Variable("syn", "1", "unit", 0.0, "facilitation variable"),
    "x_S": Variable("syn", "1", "unit", 1.0, "available synaptic resources"),
    "r_S": Variable("syn", "1", None, None, "fraction of resources released at the last spike"),
    "Gamma_S": Variable("syn", "1", "unit", 0.0, "activated presynaptic gliotransmitter receptors"),
    "Y_S": Variable("syn", "mM", "conc", 0.0, "cleft glutamate"),
    "Gamma_A": Variable("unit", "1", "unit", 0.0, "activated astrocytic receptors"),
    "I": Variable("unit", "uM", "conc", None, "IP3"),
    "C": Variable("unit", "uM", "cyto", None, "cytosolic Ca2+"),
    "h": Variable("unit", "1", "unit", None, "IP3R de-inactivation"),
    "G_A": Variable("unit", "uM", "conc", 0.0, "extrasynaptic gliotransmitter"),
    "x_A": Variable("unit", "1", "unit", 1.0, "releasable gliotransmitter fraction"),
    "n_glio": Variable("unit", "1", None, None, "gliotransmitter release events so far"),
    "c": Variable("unit", "1", "conc", 0.0, "Graupner–Brunel calcium"),
    "rho": Variable("unit", "1", None, None, "synaptic efficacy (initial value: rho_init)"),
    "v": Variable("unit", "mV", "any", None, "postsynaptic membrane potential (rest: E_L)"),
    "g_syn": Variable("unit", "nS", "conc", 0.0, "postsynaptic conductance"),
    "I_syn": Variable("unit", "pA", "any", 0.0, "postsynaptic synaptic current"),
    "I_sic": Variable("unit", "pA", "any", 0.0, "slow inward current"),
    "n_lif": Variable("unit", "1", None, None, "LIF spikes so far"),
}
#: state variable -> (group, trace unit, physical range) of the settable initial values
STATE_RANGES: dict[str, tuple[str, str, str]] = {
    name: (v.group, v.unit, v.init) for name, v in VARIABLES.items() if v.init is not None}
#: rest values that do not depend on the parameters (all settable ones but I, C, h and v)
REST_FIXED: dict[str, float] = {
    name: v.rest for name, v in VARIABLES.items() if v.init is not None and v.rest is not None}


@table_dataclass((name, float | None, None) for name in STATE_RANGES)
class InitialState:
    """Initial value of each settable state variable of :data:`VARIABLES` (trace units);
    ``None``: the rest state.

    The rest state is the unstimulated steady state of the parameters in use: the stable
    root of the G-ChI astrocyte for ``I, C, h``
    (:func:`astro_sim.tripartite.reference.gchi_rest_state`), ``Gamma_A = G_A = 0``,
    ``x_A = x_S = 1``, ``u_S = Gamma_S = Y_S = c = 0``, the LIF neuron at ``E_L`` with no
    synaptic conductance or current. The efficacy starts at ``rho_init``. Under the
    ``ip3_clamp`` protocol ``I`` starts at (and stays at) the clamp.
    """

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
