"""The RMAAT network parameter set ``rmaat-network/v1`` and the neuron geometry.

Equations (docs/parameters.md lists the parameters; after Kozachkov, Slotine & Krotov,
PNAS 2025, with the astrocytic process split into a short-term ``p_s`` and a long-term
``p_l`` as in RMAAT)::

    tau_n  dx_j/dt    = -lam x_j     + sum_i g(s_ij) phi(x_i) + b_j(t)
    tau_s  ds_ij/dt   = -beta s_ij   + theta(x_i) theta(x_j) + psi(p_s_ij)
    tau_ps dp_s_ij/dt = -gamma_s p_s_ij + sum_{kl != ij} T_ijkl psi(p_s_kl) + kappa(s_ij)
    tau_pl dp_l_ij/dt = -gamma_l p_l_ij + kappa(s_ij)
    T_ijkl = c_T exp(-|m_ij - m_kl| / l_T),   m_ij = midpoint of neurons i and j

Nonlinearities (:data:`NONLINEARITIES`): the tanh family of Kozachkov et al. (bounded,
odd, slope 1 at 0), with ``g(s) = s`` so that a synapse at rest (s = 0) transmits nothing.

:data:`PARAMS` is the one table of the parameters: name, default, unit, meaning and the
reason for the value. :class:`NetworkParams` (its fields, their order and defaults),
:data:`PARAM_DOCS`, :func:`describe` and the Brian2 :func:`namespace` derive from it.
Values are plain floats in the unit their row names, which the config key also carries as
a suffix (``tau_pl_s``: seconds; the equations' symbol is the key without it, ``tau_pl``).
The published RMAAT parameter values are not public; this set was chosen to produce the
behaviour the RMAAT macro model distils, and every row says which behaviour it produces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from astro_rmaat.config import require_positive
from astro_rmaat.errors import ConfigError
from astro_sim.param_table import params_dataclass, quantity

PARAM_SET = "rmaat-network"
PARAM_VERSION = "v1"
PARAM_SET_ID = f"{PARAM_SET}/{PARAM_VERSION}"

#: The nonlinearities, written once for documentation; model.py and reference.py each
#: spell them in their own language (Brian2 strings / NumPy).
NONLINEARITIES = {
    "phi(x)": "tanh(x)      presynaptic rate transfer",
    "g(s)": "s            synaptic weight read-out (zero at rest)",
    "theta(x)": "tanh(x)      Hebbian pre/post factor",
    "psi(p)": "tanh(p)      astrocytic process -> synapse and -> neighbouring processes",
    "kappa(s)": "tanh(s)      synaptic activity -> astrocytic processes (feeds p_s and p_l)",
}


class NetworkParam(NamedTuple):
    name: str       # config key: the equations' symbol, plus "_<unit>" when it has a unit
    value: float    # default, in ``unit``
    unit: str       # a key of astro_sim.param_table.UNITS ("1": dimensionless)
    meaning: str
    reason: str     # why this value


PARAMS: tuple[NetworkParam, ...] = (
    NetworkParam("tau_n_ms", 10.0, "ms", "rate-neuron time constant",
                 "a fast membrane/rate time scale; the fastest process, so neurons follow the drive "
                 "within a few ms of each switch"),
    NetworkParam("lam", 1.0, "1", "neuron leak (lambda)",
                 "Kozachkov et al. use unit leak; a driven neuron then settles at x = b + synaptic input"),
    NetworkParam("tau_s_ms", 20.0, "ms", "synaptic time constant",
                 "slower than the neurons (2x tau_n) so s integrates the Hebbian product, fast "
                 "enough that s returns to rest well within the 0.6 s drive-off period"),
    NetworkParam("beta", 2.0, "1", "synaptic decay",
                 "2 (not 1) keeps the s <-> p_s loop gain (1 + sum_kl T) / (beta gamma_s) < 1, so "
                 "synapse and short-term process return to s = p_s = 0 between cycles (no bistability)"),
    NetworkParam("tau_ps_ms", 50.0, "ms", "short-term process time constant",
                 "sets the short-term astrocytic time scale; with gamma_s = 2 an isolated p_s "
                 "relaxes with 25 ms and the coupled s-p_s loop with ~0.09 s (measured), "
                 "so p_s is back near zero before the next cycle"),
    NetworkParam("gamma_s", 2.0, "1", "short-term process decay", "see beta: keeps the fast loop stable"),
    NetworkParam("tau_pl_s", 10.0, "s", "long-term process time constant",
                 "10 s = 10 cycles of the default 1 s protocol: p_l integrates over ~20-40 cycles "
                 "and saturates (increment ratio e^{-1/10} per cycle); >100x slower than p_s"),
    NetworkParam("gamma_l", 1.0, "1", "long-term process decay",
                 "unit decay: p_l saturates at the cycle-averaged kappa(s) (leaky integrator, as "
                 "in RMAAT's p^l equation)"),
    NetworkParam("c_T", 0.15, "1", "coupling strength T at zero distance",
                 "0.15 gives a row sum of T below 0.8 for the default 9 processes: visible "
                 "distance-dependent spread of p_s, while the fast loop stays stable"),
    NetworkParam("l_T_um", 20.0, "um", "coupling length scale l_T",
                 "equal to the neuron spacing (20 um), so neighbouring processes couple with "
                 "~e^-0.5 and the farthest with < e^-1.5: coupling clearly falls with distance"),
)
#: dimensionless decay rates (checked positive; the other dimensionless row, c_T, >= 0)
DECAYS = ("lam", "beta", "gamma_s", "gamma_l")


def symbol(row: NetworkParam) -> str:
    """The row's symbol in the Brian2 equations: its name without the unit suffix."""
    return row.name if row.unit == "1" else row.name.removesuffix(f"_{row.unit}")


for _row in PARAMS:
    if _row.unit != "1" and not _row.name.endswith(f"_{_row.unit}"):
        raise AssertionError(f"network parameter {_row.name!r}: the name must end with its unit "
                             f"_{_row.unit}")

#: name -> (unit, meaning, reason for the value)
PARAM_DOCS: dict[str, tuple[str, str, str]] = {r.name: (r.unit, r.meaning, r.reason) for r in PARAMS}


@params_dataclass(PARAMS)
class NetworkParams:
    """``rmaat-network/v1``: one field per row of :data:`PARAMS` (value, unit, meaning, reason)."""

    def __post_init__(self) -> None:
        for row in PARAMS:
            if row.unit != "1":
                require_positive(f"params.{row.name}", getattr(self, row.name), row.unit)
        for name in DECAYS:
            require_positive(f"params.{name}", getattr(self, name), "(decay rate, dimensionless)")
        if not (np.isfinite(self.c_T) and self.c_T >= 0):
            raise ConfigError(f"params.c_T = {self.c_T!r}: expected a finite number >= 0")

    # ---- derived, in seconds / metres
    @property
    def tau_short_eff_s(self) -> float:
        """Relaxation time of an isolated p_s, tau_ps / gamma_s (s)."""
        return self.tau_ps_ms * 1e-3 / self.gamma_s

    @property
    def tau_long_eff_s(self) -> float:
        """Relaxation time of p_l, tau_pl / gamma_l (s)."""
        return self.tau_pl_s / self.gamma_l

    def is_default(self) -> bool:
        return self == NetworkParams()


def namespace(params: NetworkParams) -> dict[str, Any]:
    """The parameter set with Brian2 units, by equation symbol."""
    return {symbol(r): quantity(getattr(params, r.name), r.unit) for r in PARAMS}


def describe() -> list[dict[str, str]]:
    """The parameter table: name, default value, unit, meaning, reason."""
    return [{"name": r.name, "value": repr(r.value), "unit": r.unit, "meaning": r.meaning,
             "reason": r.reason} for r in PARAMS]


@dataclass(frozen=True)
class Geometry:
    """Where the neurons are. Presynaptic neurons on one row, postsynaptic on another."""

    n_pre: int = 3             # presynaptic neurons (indices 0 .. n_pre-1)
    n_post: int = 3            # postsynaptic neurons (indices n_pre .. n_pre+n_post-1)
    spacing_um: float = 20.0   # um  distance between neighbours within a row
    row_gap_um: float = 30.0   # um  distance between the pre and the post row
    post_offset_um: float = 5.0  # um  shift of the post row along the rows (breaks symmetry)
    jitter_um: float = 1.0     # um  s.d. of Gaussian position jitter (drawn from cfg.seed)

    def __post_init__(self) -> None:
        for name in ("n_pre", "n_post"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"geometry.{name} = {value!r}: expected an integer >= 1")
        require_positive("geometry.spacing_um", self.spacing_um, "um")
        require_positive("geometry.row_gap_um", self.row_gap_um, "um")
        if not (np.isfinite(self.jitter_um) and self.jitter_um >= 0):
            raise ConfigError(f"geometry.jitter_um = {self.jitter_um!r}: expected a number >= 0")

    @property
    def n_neurons(self) -> int:
        return self.n_pre + self.n_post

    @property
    def n_synapses(self) -> int:
        return self.n_pre * self.n_post


def neuron_positions_um(geometry: Geometry, seed: int) -> np.ndarray:
    """(n_neurons, 2) positions in um; the jitter is drawn from ``seed`` only."""
    rng = np.random.default_rng(seed)
    pre = np.stack([np.arange(geometry.n_pre) * geometry.spacing_um,
                    np.zeros(geometry.n_pre)], axis=1)
    post = np.stack([np.arange(geometry.n_post) * geometry.spacing_um + geometry.post_offset_um,
                     np.full(geometry.n_post, geometry.row_gap_um)], axis=1)
    pos = np.concatenate([pre, post])
    return pos + rng.normal(0.0, geometry.jitter_um, size=pos.shape) if geometry.jitter_um else pos


def synapse_pairs(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Synapse k connects neuron ``pre[k]`` to neuron ``post[k]`` (all pre x all post, pre-major)."""
    pre = np.repeat(np.arange(geometry.n_pre), geometry.n_post)
    post = geometry.n_pre + np.tile(np.arange(geometry.n_post), geometry.n_pre)
    return pre, post


def coupling_matrix(params: NetworkParams, positions_um: np.ndarray,
                    pre: np.ndarray, post: np.ndarray) -> np.ndarray:
    """T[ij, kl] = c_T exp(-dist(m_ij, m_kl) / l_T), zero on the diagonal (no self-coupling)."""
    mid = (positions_um[pre] + positions_um[post]) / 2.0
    dist = np.linalg.norm(mid[:, None, :] - mid[None, :, :], axis=-1)
    T = params.c_T * np.exp(-dist / params.l_T_um)
    np.fill_diagonal(T, 0.0)
    return T
