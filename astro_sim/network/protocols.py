"""Stimulation protocols as data: repeated STP cycles.

A protocol is a frozen dataclass; the model reads it only through :func:`drive_segments`
(piecewise-constant pieces, used by the SciPy reference) and :func:`drive_namespace`
(the same switch times as step counts for the Brian2 expression :data:`DRIVE_EXPR`).
Changing the protocol therefore never touches the model equations, and in Brian2 it does
not even trigger a recompilation (the values travel in the namespace).

One STP cycle of length ``tau_cycle_s``: the drive ``amplitude`` is on for the first
``drive_s`` seconds, then off. ``n_cycles`` cycles, applied to the neurons in ``driven``
(``None``: every neuron).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from astro_rmaat.config import require_positive
from astro_rmaat.errors import ConfigError


@dataclass(frozen=True)
class STPProtocol:
    tau_cycle_s: float = 1.0                # s   cycle length (one cycle = one RMAAT segment)
    drive_s: float = 0.4                    # s   drive-on time at the start of each cycle
    amplitude: float = 1.0                  # 1   drive b_j while on (units of x)
    n_cycles: int = 40                      # 1   number of cycles
    driven: tuple[int, ...] | None = None   # neuron indices driven; None = all neurons

    def __post_init__(self) -> None:
        require_positive("protocol.tau_cycle_s", self.tau_cycle_s, "s")
        require_positive("protocol.drive_s", self.drive_s, "s")
        if self.drive_s > self.tau_cycle_s:
            raise ConfigError(f"protocol.drive_s = {self.drive_s!r}: expected at most the cycle "
                              f"length protocol.tau_cycle_s = {self.tau_cycle_s!r} s")
        if isinstance(self.n_cycles, bool) or not isinstance(self.n_cycles, int) or self.n_cycles < 1:
            raise ConfigError(f"protocol.n_cycles = {self.n_cycles!r}: expected an integer >= 1 "
                              "(a protocol needs at least one cycle)")
        if not math.isfinite(self.amplitude):
            raise ConfigError(f"protocol.amplitude = {self.amplitude!r}: expected a finite number")
        if self.driven is not None:
            if len(set(self.driven)) != len(self.driven) or any(k < 0 for k in self.driven):
                raise ConfigError(f"protocol.driven = {list(self.driven)!r}: expected distinct "
                                  "neuron indices >= 0 (or null for all neurons)")

    @property
    def duration_s(self) -> float:
        return self.tau_cycle_s * self.n_cycles

    def boundaries_s(self) -> np.ndarray:
        """Cycle boundaries t = k tau_cycle, k = 0 .. n_cycles."""
        return np.arange(self.n_cycles + 1) * self.tau_cycle_s

    def driven_mask(self, n_neurons: int) -> np.ndarray:
        """1.0 for each driven neuron, else 0.0."""
        mask = np.zeros(n_neurons)
        if self.driven is None:
            mask[:] = 1.0
        else:
            bad = [k for k in self.driven if k >= n_neurons]
            if bad:
                raise ConfigError(f"protocol.driven = {list(self.driven)!r}: neuron {bad[0]} does not "
                                  f"exist; expected indices 0 .. {n_neurons - 1}")
            mask[list(self.driven)] = 1.0
        return mask


def drive_segments(protocol: STPProtocol) -> list[tuple[float, float, float]]:
    """[(t_start_s, t_end_s, amplitude)]: the drive as piecewise-constant pieces."""
    segs = []
    for k in range(protocol.n_cycles):
        t0 = k * protocol.tau_cycle_s
        t_on_end = t0 + protocol.drive_s
        segs.append((t0, t_on_end, protocol.amplitude))
        if protocol.drive_s < protocol.tau_cycle_s:
            segs.append((t_on_end, t0 + protocol.tau_cycle_s, 0.0))
    return segs


def steps_of(value_s: float, dt_s: float, what: str) -> int:
    """``value_s / dt_s`` as an integer; an error unless it is (nearly) a whole number."""
    n = value_s / dt_s
    k = int(round(n))
    if k < 1 or abs(n - k) > 1e-6 * max(1.0, n):
        raise ConfigError(f"{what} = {value_s!r} s is not a whole number of time steps "
                          f"dt = {dt_s!r} s; expected a multiple of dt")
    return k


@dataclass(frozen=True)
class DriveSteps:
    """The protocol on the integration grid: whole numbers of steps of ``dt``."""

    cycle: int      # steps per cycle
    on: int         # drive-on steps at the start of each cycle
    total: int      # steps in the whole protocol (drive is off from then on)
    amplitude: float


def drive_steps(protocol: STPProtocol, dt_s: float) -> DriveSteps:
    """Switch times as step counts; an error unless they lie on the dt grid."""
    return DriveSteps(cycle=steps_of(protocol.tau_cycle_s, dt_s, "protocol.tau_cycle_s"),
                      on=steps_of(protocol.drive_s, dt_s, "protocol.drive_s"),
                      total=steps_of(protocol.duration_s, dt_s, "protocol duration"),
                      amplitude=float(protocol.amplitude))


#: The drive of step ``n`` (Brian2's integer ``t_in_timesteps``) as a Brian2 expression over
#: the names of :func:`drive_namespace`. Integer arithmetic, so switch times are exact and
#: one compiled code object serves every protocol (only namespace values change).
DRIVE_EXPR = ("stp_amplitude * int((t_in_timesteps % stp_cycle_steps) < stp_on_steps)"
              " * int(t_in_timesteps < stp_total_steps)")


def drive_namespace(protocol: STPProtocol, dt_s: float) -> dict[str, float | int]:
    """The names :data:`DRIVE_EXPR` reads, for a Brian2 namespace."""
    steps = drive_steps(protocol, dt_s)
    return {"stp_amplitude": steps.amplitude, "stp_cycle_steps": steps.cycle,
            "stp_on_steps": steps.on, "stp_total_steps": steps.total}
