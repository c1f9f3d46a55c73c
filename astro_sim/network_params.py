"""The RMAAT network parameter set ``rmaat-network/v1`` and the neuron geometry.

Equations (DESIGN.md; after Kozachkov, Slotine & Krotov, PNAS 2025, with the astrocytic
process split into a short-term ``p_s`` and a long-term ``p_l`` as in RMAAT)::

    tau_n  dx_j/dt    = -lam x_j     + sum_i g(s_ij) phi(x_i) + b_j(t)
    tau_s  ds_ij/dt   = -beta s_ij   + theta(x_i) theta(x_j) + psi(p_s_ij)
    tau_ps dp_s_ij/dt = -gamma_s p_s_ij + sum_{kl != ij} T_ijkl psi(p_s_kl) + kappa(s_ij)
    tau_pl dp_l_ij/dt = -gamma_l p_l_ij + kappa(s_ij)
    T_ijkl = c_T exp(-|m_ij - m_kl| / l_T),   m_ij = midpoint of neurons i and j

Nonlinearities (:data:`NONLINEARITIES`): the tanh family of Kozachkov et al. (bounded,
odd, slope 1 at 0), with ``g(s) = s`` so that a synapse at rest (s = 0) transmits nothing.

Values are plain floats in the unit written in each field's name (``_ms``, ``_s``, ``_um``)
or dimensionless. The published RMAAT parameter values are not public (see
``reference/rmaat_and_lra.md``); this set was chosen to produce the behaviour the RMAAT
macro model distils, and every choice below says which behaviour it produces.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from astro_rmaat.config import require_positive
from astro_rmaat.errors import ConfigError

PARAM_SET = "rmaat-network"
PARAM_VERSION = "v1"
PARAM_SET_ID = f"{PARAM_SET}/{PARAM_VERSION}"

#: The nonlinearities, written once for documentation; network.py and reference.py each
#: spell them in their own language (Brian2 strings / NumPy) and the tests compare them.
NONLINEARITIES = {
    "phi(x)": "tanh(x)      presynaptic rate transfer",
    "g(s)": "s            synaptic weight read-out (zero at rest)",
    "theta(x)": "tanh(x)      Hebbian pre/post factor",
    "psi(p)": "tanh(p)      astrocytic process -> synapse and -> neighbouring processes",
    "kappa(s)": "tanh(s)      synaptic activity -> astrocytic processes (feeds p_s and p_l)",
}


@dataclass(frozen=True)
class NetworkParams:
    """``rmaat-network/v1``. Each field: value, unit, meaning; the reason is in PARAM_DOCS."""

    tau_n_ms: float = 10.0    # ms   neuron rate time constant
    lam: float = 1.0          # 1    neuron leak
    tau_s_ms: float = 20.0    # ms   synaptic time constant
    beta: float = 2.0         # 1    synaptic decay
    tau_ps_ms: float = 50.0   # ms   short-term astrocytic process time constant
    gamma_s: float = 2.0      # 1    short-term process decay
    tau_pl_s: float = 10.0    # s    long-term astrocytic process time constant
    gamma_l: float = 1.0      # 1    long-term process decay
    c_T: float = 0.15         # 1    process-process coupling strength at zero distance
    l_T_um: float = 20.0      # um   coupling length scale

    def __post_init__(self) -> None:
        for name in ("tau_n_ms", "tau_s_ms", "tau_ps_ms", "tau_pl_s", "l_T_um"):
            require_positive(f"params.{name}", getattr(self, name), _UNITS[name])
        for name in ("lam", "beta", "gamma_s", "gamma_l"):
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


_UNITS = {"tau_n_ms": "ms", "tau_s_ms": "ms", "tau_ps_ms": "ms", "tau_pl_s": "s", "l_T_um": "um"}

#: name -> (unit, meaning, reason for the value)
PARAM_DOCS: dict[str, tuple[str, str, str]] = {
    "tau_n_ms": ("ms", "rate-neuron time constant",
                 "a fast membrane/rate time scale; the fastest process, so neurons follow the drive "
                 "within a few ms of each switch"),
    "lam": ("1", "neuron leak (lambda)",
            "Kozachkov et al. use unit leak; a driven neuron then settles at x = b + synaptic input"),
    "tau_s_ms": ("ms", "synaptic time constant",
                 "slower than the neurons (2x tau_n) so s integrates the Hebbian product, fast "
                 "enough that s returns to rest well within the 0.6 s drive-off period"),
    "beta": ("1", "synaptic decay",
             "2 (not 1) keeps the s <-> p_s loop gain (1 + sum_kl T) / (beta gamma_s) < 1, so "
             "synapse and short-term process return to s = p_s = 0 between cycles (no bistability)"),
    "tau_ps_ms": ("ms", "short-term process time constant",
                  "sets the short-term astrocytic time scale; with gamma_s = 2 an isolated p_s "
                  "relaxes with 25 ms and the coupled s-p_s loop with ~0.09 s (measured), "
                  "so p_s is back near zero before the next cycle"),
    "gamma_s": ("1", "short-term process decay", "see beta: keeps the fast loop stable"),
    "tau_pl_s": ("s", "long-term process time constant",
                 "10 s = 10 cycles of the default 1 s protocol: p_l integrates over ~20-40 cycles "
                 "and saturates (increment ratio e^{-1/10} per cycle); >100x slower than p_s"),
    "gamma_l": ("1", "long-term process decay",
                "unit decay: p_l saturates at the cycle-averaged kappa(s) (leaky integrator, as "
                "in RMAAT's p^l equation)"),
    "c_T": ("1", "coupling strength T at zero distance",
            "0.15 gives a row sum of T below 0.8 for the default 9 processes: visible "
            "distance-dependent spread of p_s, while the fast loop stays stable"),
    "l_T_um": ("um", "coupling length scale l_T",
               "equal to the neuron spacing (20 um), so neighbouring processes couple with "
               "~e^-0.5 and the farthest with < e^-1.5: coupling clearly falls with distance"),
}


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


def describe() -> list[dict[str, str]]:
    """The parameter table: name, default value, unit, meaning, reason."""
    defaults = NetworkParams()
    return [{"name": f.name, "value": repr(getattr(defaults, f.name)), "unit": PARAM_DOCS[f.name][0],
             "meaning": PARAM_DOCS[f.name][1], "reason": PARAM_DOCS[f.name][2]}
            for f in dataclasses.fields(NetworkParams)]
