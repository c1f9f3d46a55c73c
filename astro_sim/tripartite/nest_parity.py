"""NEST's own test protocols for its astrocyte and Tsodyks models, and the comparison with them.

Each :class:`NestCase` is the protocol of one test of NEST's test suite, as a
:class:`~astro_sim.tripartite.nest_models.NestModelConfig`, with the file of reference numbers carried
over from that test (``tests/astro_sim/fixtures/nest/``; each file's header names the NEST
file and commit) and the tolerance NEST's test applies:

``rel``
    ``|Brian2 - reference| <= 1e-6 |reference| + 1e-12``: ``pytest.approx``'s default, which
    NEST's ``test_astrocyte.py`` uses. The reference is a SciPy ``odeint`` solution; its own
    error is what remains (:func:`astro_sim.tripartite.reference.integrate_lr1994` shows it).
``digits``
    half a unit of the 6th significant digit of each reference value (exact for a reference
    of 0): the references were printed to 6 significant digits, and NEST compared rounded
    values (SLI) or used ``atol = 1e-5`` mV (pytest), the rounding being the only error left
    after exact integration.

``bench/nest_parity.py`` prints the table; ``tests/astro_sim/test_nest_parity.py`` asserts it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from astro_sim.tripartite.nest_models import NestModelConfig, run

_NEST_HEAD = "nest/nest-simulator@84b06d8d442c"

# NEST's spike generators reach the synapse through a parrot_neuron (default delay 1.0 ms)
# and the synapse adds 0.1 ms: a spike generated at t arrives at t + 1.1 ms.
_PARROT_AND_SYNAPSE_MS = 1.1


def _arrivals(first: float, stop: float, step: float) -> tuple[float, ...]:
    return tuple(round(float(t) + _PARROT_AND_SYNAPSE_MS, 6) for t in np.arange(first, stop, step))


@dataclass(frozen=True)
class NestCase:
    name: str                          # short name of the case
    nest_test: str                     # the NEST test (file :: function) the numbers come from
    reference: str                     # file of reference numbers (in the reference folder)
    config: NestModelConfig            # NEST's protocol on the Brian2 model
    columns: tuple[str, ...]           # compared columns (same name in reference and model output)
    tolerance: Literal["rel", "digits"]  # see the module docstring
    step_offset: int = 0               # reference in NEST time steps: t = (step - step_offset) dt


CASES: dict[str, NestCase] = {c.name: c for c in (
    NestCase(
        "astrocyte_lr_1994",
        f"testsuite/pytests/neurons/test_astrocyte.py::test_closeness_nest_odeint ({_NEST_HEAD})",
        "astrocyte_lr_1994.csv",
        NestModelConfig(model="astrocyte_lr_1994", dt_ms=0.1, duration_ms=100.0,
                        spike_times_ms=(10.0,), weight=1.0,
                        params={"IP3": 1.0, "Ca_astro": 1.0, "h_IP3R": 1.0}),
        ("IP3_uM", "Ca_astro_uM", "h_IP3R"), "rel"),
    NestCase(
        "tsodyks_depressing",
        f"testsuite/pytests/synapses/test_tsodyks_synapse.py::test_tsodyks_depressing ({_NEST_HEAD})",
        "tsodyks_depressing.csv",
        NestModelConfig(model="tsodyks_iaf_psc_exp", dt_ms=0.1, duration_ms=1200.0,
                        spike_times_ms=_arrivals(98.0, 1048.1, 50.0), weight=250.0,
                        params={"tau_m": 40.0, "C_m": 40.0, "E_L": 0.0, "V_reset": 0.0,
                                "V_m": 0.0, "V_th": 15.0, "t_ref": 2.0, "tau_syn_ex": 3.0,
                                "tau_syn_in": 3.0, "tau_psc": 3.0, "tau_rec": 800.0,
                                "tau_fac": 0.0, "U": 0.5, "u": 0.0, "x": 1.0}),
        ("V_m_mV",), "digits"),
    NestCase(
        "tsodyks_facilitating",
        f"testsuite/pytests/synapses/test_tsodyks_synapse.py::test_tsodyks_facilitating ({_NEST_HEAD})",
        "tsodyks_facilitating.csv",
        NestModelConfig(model="tsodyks_iaf_psc_exp", dt_ms=0.1, duration_ms=1200.0,
                        spike_times_ms=_arrivals(98.1, 1051.0, 50.1), weight=1540.0,
                        params={"tau_m": 60.0, "C_m": 60.0, "E_L": 0.0, "V_reset": 0.0,
                                "V_m": 0.0, "V_th": 15.0, "t_ref": 2.0, "tau_syn_ex": 1.5,
                                "tau_syn_in": 1.5, "tau_psc": 1.5, "tau_rec": 130.0,
                                "tau_fac": 530.0, "U": 0.03, "u": 0.0, "x": 1.0}),
        ("V_m_mV",), "digits"),
    # The SLI file's comments: the DC current reaches the neuron at step 2 and first moves V_m
    # at step 3, so NEST's step s is t = (s - 2) dt of a run with I_e = 1000 pA from t = 0.
    NestCase(
        "iaf_psc_exp_dc",
        "testsuite/unittests/test_iaf_psc_exp.sli (nest/nest-simulator@ae7c72099bee)",
        "iaf_psc_exp_dc.csv",
        NestModelConfig(model="tsodyks_iaf_psc_exp", dt_ms=0.1, duration_ms=7.8,
                        params={"I_e": 1000.0}),
        ("V_m_mV",), "digits", step_offset=2),
)}


def read_reference(path: str | Path) -> pd.DataFrame:
    """A reference file: ``#`` header lines (source, protocol), then CSV with a column row."""
    return pd.read_csv(path, comment="#")


def allowed_error(reference: np.ndarray, tolerance: str) -> np.ndarray:
    """The largest |Brian2 - reference| each reference value allows (module docstring)."""
    ref = np.abs(np.asarray(reference, dtype=np.float64))
    if tolerance == "rel":
        return 1e-6 * ref + 1e-12
    # half a unit of the 6th significant digit; a printed 0 is exact
    exponent = np.floor(np.log10(np.where(ref > 0, ref, 1.0)))
    return np.where(ref > 0, 0.5 * 10.0 ** (exponent - 5), 0.0) + 1e-12


@dataclass(frozen=True)
class Comparison:
    case: str
    column: str
    n: int               # reference values compared
    max_abs: float       # max |Brian2 - reference|, in the column's unit
    max_rel: float       # max |Brian2 - reference| / |reference| over nonzero references
    worst: float         # max |Brian2 - reference| / allowed (<= 1: within the tolerance)
    at_ms: float         # time of the worst value

    @property
    def ok(self) -> bool:
        return self.worst <= 1.0


def reference_rows(case: NestCase, ref: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Step index k (t = k dt) of each reference row in the model output, and those rows."""
    dt = case.config.dt_ms
    if case.step_offset:
        k = ref["step"].to_numpy() - case.step_offset
    else:
        k = np.rint(ref["t_ms"].to_numpy() / dt).astype(np.int64)
    keep = k >= 0                     # a row before the run starts has no Brian2 sample
    return k[keep], ref[keep].reset_index(drop=True)


def compare(case: NestCase, reference_dir: str | Path,
            target: str | None = None) -> tuple[list[Comparison], pd.DataFrame, pd.DataFrame]:
    """Run ``case`` and compare it with its reference: (comparisons, model output, reference)."""
    cfg = case.config if target is None else dataclasses.replace(case.config, target=target)
    out = run(cfg)
    k, ref = reference_rows(case, read_reference(Path(reference_dir) / case.reference))
    rows = []
    for col in case.columns:
        r = ref[col].to_numpy(dtype=np.float64)
        err = np.abs(out[col].to_numpy()[k] - r)
        ratio = err / allowed_error(r, case.tolerance)
        nz = r != 0
        i = int(np.argmax(ratio))
        rows.append(Comparison(case.name, col, int(r.size), float(err.max()),
                               float(np.max(err[nz] / np.abs(r[nz]))), float(ratio[i]),
                               float(k[i] * cfg.dt_ms)))
    return rows, out, ref
