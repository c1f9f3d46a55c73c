"""Stimulation protocols of the tripartite synapse, as data.

A protocol is described by :class:`SpikeProtocolConfig` (plain JSON values) and turned by
:func:`make_stimulus` into a :class:`Stimulus`: fixed-size spike-time tables that the Brian2
network reads through ``TimedArray`` objects (presynaptic and postsynaptic spikes) and the
settings of the direct astrocytic IP3 drive, which the network holds as ``(shared,
constant)`` variables. The network's code never depends on the protocol, so Cython compiles
it once, and in ``cpp_standalone`` a new protocol of the same run length is new
``run_args``, not a rebuild.

Kinds (``kind``):

``trains``
    ``n_trains`` trains of ``train_pulses`` presynaptic pulses at ``train_rate_hz``; train
    onsets ``inter_train_s`` apart (onset to onset, the protocol period).
``pairing``
    ``n_pairs`` pre–post pairs at ``pair_rate_hz``; the postsynaptic spike follows the
    presynaptic one by ``pair_delay_ms`` (negative: post before pre), or, per unit, by
    ``pair_delays_ms[i % len]``. Period ``1/pair_rate_hz``.
``poisson_steps``
    presynaptic Poisson trains whose rate steps through ``rates_hz``, ``step_s`` per level,
    drawn independently per unit from the run's seed (NumPy), so every Brian2 target sees
    the very same spikes. Period ``step_s``.
``ip3_drive``
    no spikes; ``n_ip3_pulses`` square pulses of exogenous IP3 production
    ``ip3_amp_uM_per_s`` lasting ``ip3_pulse_s``, ``ip3_period_s`` apart (the period).
``ip3_bias``
    no spikes; the bias level of the exogenous IP3 flow (``I_bias``) is raised by
    ``ip3_bias_uM`` during ``n_ip3_pulses`` pulses of ``ip3_pulse_s``, ``ip3_period_s``
    apart (the period); a long pulse is a step.
``ip3_clamp``
    no spikes; IP3 is held at ``ip3_clamp_uM`` (unit i: ``ip3_clamp_uM[i % len]``) for
    ``clamp_duration_s`` (one period): the ChI subsystem of the astrocyte.
``explicit``
    the presynaptic and postsynaptic spike times given in ``pre_times_s`` / ``post_times_s``
    within a run of ``explicit_duration_s`` (one period).

Every event of period ``k`` starts at ``k * period + offset_s``; the run lasts
``n_periods * period + tail_s``; the slow variable is sampled at ``k * period``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from astro_rmaat.config import require_positive
from astro_rmaat.errors import ConfigError

Kind = Literal["trains", "pairing", "poisson_steps", "ip3_drive", "ip3_bias", "ip3_clamp",
               "explicit"]


@dataclass(frozen=True)
class SpikeProtocolConfig:
    kind: Kind = "pairing"                 # which protocol (see module docstring)
    offset_s: float = 0.05                 # s, start of the events within each period
    tail_s: float = 0.0                    # s, simulated time after the last period
    # trains
    n_trains: int = 5                      # number of presynaptic trains
    train_pulses: int = 20                 # pulses per train
    train_rate_hz: float = 20.0            # Hz, pulse rate within a train
    inter_train_s: float = 10.0            # s, onset-to-onset interval of trains (the period)
    # pairing
    n_pairs: int = 60                      # number of pre–post pairs
    pair_rate_hz: float = 1.0              # Hz, pairing frequency (period 1/f)
    pair_delay_ms: float = 10.0            # ms, t_post - t_pre
    pair_delays_ms: tuple[float, ...] = () # ms, per-unit delays (unit i: [i % len]); overrides pair_delay_ms
    # poisson_steps
    rates_hz: tuple[float, ...] = (5.0, 20.0, 5.0)  # Hz, presynaptic rate of each step
    step_s: float = 10.0                   # s, duration of each rate step (the period)
    # ip3_drive
    n_ip3_pulses: int = 3                  # number of IP3 production pulses
    ip3_amp_uM_per_s: float = 0.5          # uM/s, exogenous IP3 production during a pulse
    ip3_pulse_s: float = 5.0               # s, duration of one pulse
    ip3_period_s: float = 30.0             # s, onset-to-onset interval of pulses (the period)
    # ip3_bias (uses n_ip3_pulses, ip3_pulse_s, ip3_period_s)
    ip3_bias_uM: float = 1.0               # uM, rise of I_bias during a pulse
    # ip3_clamp
    ip3_clamp_uM: tuple[float, ...] = (0.5,)  # uM, clamped IP3 (unit i: [i % len])
    clamp_duration_s: float = 100.0        # s, run length of the clamp (one period)
    # explicit
    pre_times_s: tuple[float, ...] = ()    # s, presynaptic spike times
    post_times_s: tuple[float, ...] = ()   # s, postsynaptic spike times
    explicit_duration_s: float = 1.0       # s, run length of the explicit protocol (one period)

    def __post_init__(self) -> None:
        if self.offset_s < 0 or self.tail_s < 0:
            raise ConfigError(f"protocol.offset_s = {self.offset_s!r}, protocol.tail_s = "
                              f"{self.tail_s!r}: expected non-negative seconds")
        for name in ("train_rate_hz", "inter_train_s", "pair_rate_hz", "step_s",
                     "ip3_pulse_s", "ip3_period_s", "explicit_duration_s", "clamp_duration_s"):
            require_positive(f"protocol.{name}", getattr(self, name))
        for name in ("n_trains", "train_pulses", "n_pairs", "n_ip3_pulses"):
            if getattr(self, name) < 1:
                raise ConfigError(f"protocol.{name} = {getattr(self, name)!r}: expected >= 1")
        if not self.rates_hz or any(r < 0 or r != r for r in self.rates_hz):
            raise ConfigError(f"protocol.rates_hz = {self.rates_hz!r}: expected a non-empty "
                              "list of non-negative rates in Hz")
        if self.kind == "trains":
            span = self.offset_s + (self.train_pulses - 1) / self.train_rate_hz
            if span >= self.inter_train_s:
                raise ConfigError(
                    f"protocol.inter_train_s = {self.inter_train_s!r}: a train of "
                    f"{self.train_pulses} pulses at {self.train_rate_hz} Hz after offset "
                    f"{self.offset_s} s lasts {span:.4g} s; expected a longer interval")
        if not self.ip3_clamp_uM or any(not (c >= 0) or c == float("inf")
                                        for c in self.ip3_clamp_uM):
            raise ConfigError(f"protocol.ip3_clamp_uM = {list(self.ip3_clamp_uM)!r}: expected a "
                              "non-empty list of finite IP3 concentrations >= 0 uM")
        if not (self.ip3_bias_uM >= 0) or self.ip3_bias_uM == float("inf"):
            raise ConfigError(f"protocol.ip3_bias_uM = {self.ip3_bias_uM!r}: expected a finite "
                              "rise of I_bias >= 0 uM")
        if self.kind in ("ip3_drive", "ip3_bias") and self.offset_s + self.ip3_pulse_s > self.ip3_period_s:
            raise ConfigError(f"protocol.ip3_pulse_s = {self.ip3_pulse_s!r}: the pulse does "
                              f"not fit in ip3_period_s = {self.ip3_period_s!r} after offset_s")

    @property
    def period_s(self) -> float:
        """The protocol period (tau_cycle): the slow variable is sampled at its multiples."""
        return {"trains": self.inter_train_s, "pairing": 1.0 / self.pair_rate_hz,
                "poisson_steps": self.step_s, "ip3_drive": self.ip3_period_s,
                "ip3_bias": self.ip3_period_s, "ip3_clamp": self.clamp_duration_s,
                "explicit": self.explicit_duration_s}[self.kind]

    @property
    def n_periods(self) -> int:
        return {"trains": self.n_trains, "pairing": self.n_pairs,
                "poisson_steps": len(self.rates_hz), "ip3_drive": self.n_ip3_pulses,
                "ip3_bias": self.n_ip3_pulses, "ip3_clamp": 1, "explicit": 1}[self.kind]



def run_duration_s(p: SpikeProtocolConfig) -> float:
    """Length of the run: ``n_periods * period + tail_s``."""
    return p.n_periods * p.period_s + p.tail_s


NO_SPIKE_S = 1e9  # padding of the spike tables: a time no run reaches


@dataclass
class Stimulus:
    """Protocol data the network reads: spike tables (TimedArrays) and IP3 pulse settings.

    Spike tables hold each unit's spike times (s, ascending, on the dt grid) in a column of
    ``max_spikes + 1`` rows, padded with ``NO_SPIKE_S``; their shape depends only on
    ``max_spikes`` and ``n_units``, never on the protocol, so neither the Cython code nor a
    standalone build changes with the protocol.
    """

    dt_s: float                 # simulation step
    duration_s: float           # run length
    period_s: float             # protocol period (tau_cycle)
    boundaries_s: np.ndarray    # (n_periods + 1,) sample times of the slow variable
    pre: np.ndarray             # (max_spikes + 1, n_units) presynaptic spike times, s
    post: np.ndarray            # (max_spikes + 1, n_units) postsynaptic spike times, s
    ip3: dict[str, float]       # IP3 pulse train: amp_uM_per_s, bias_uM, t0_s, pulse_s, period_s, n
    clamp_uM: np.ndarray | None = None  # (n_units,) clamped IP3, uM (ip3_clamp only)
    pre_times_s: list[np.ndarray] = field(default_factory=list)   # per unit, on the grid
    post_times_s: list[np.ndarray] = field(default_factory=list)  # per unit, on the grid


def _spike_table(times_by_unit: list[np.ndarray], dt: float, duration: float, max_spikes: int,
                 which: str) -> tuple[np.ndarray, list[np.ndarray]]:
    table = np.full((max_spikes + 1, len(times_by_unit)), NO_SPIKE_S)
    snapped = []
    for u, times in enumerate(times_by_unit):
        times = np.asarray(times, dtype=float)
        bad = (times < 0) | (times >= duration) | ~np.isfinite(times)
        if bad.any():
            raise ConfigError(f"{which} spike time {float(times[bad][0])!r} s is outside the "
                              f"run [0, {duration!r}) s; expected times within the run")
        steps = np.sort(np.rint(times / dt).astype(np.int64))
        if np.unique(steps).size != steps.size:
            k = steps[np.flatnonzero(np.diff(steps) == 0)[0]]
            raise ConfigError(f"{which} spikes: two spikes fall in the same time step "
                              f"(t = {k * dt!r} s, dt = {dt!r} s); expected at most one per step")
        if steps.size > max_spikes:
            raise ConfigError(f"{which} spikes: unit {u} has {steps.size} spikes; expected at most "
                              f"max_spikes = {max_spikes} (raise max_spikes in the config)")
        table[: steps.size, u] = steps * dt
        snapped.append(steps * dt)
    return table, snapped


def make_stimulus(p: SpikeProtocolConfig, n_units: int, dt_s: float, seed: int,
                  max_spikes: int = 4096) -> Stimulus:
    """Spike tables for ``n_units`` units on the ``dt_s`` grid; Poisson draws use ``seed``."""
    period = p.period_s
    n = p.n_periods
    duration = run_duration_s(p)
    n_steps = int(round(duration / dt_s))
    if abs(n_steps * dt_s - duration) > 1e-9 * max(1.0, duration):
        raise ConfigError(f"run length {duration!r} s is not a whole number of steps of "
                          f"dt = {dt_s!r} s; expected periods that are multiples of dt")
    starts = np.arange(n) * period + p.offset_s
    pre = [np.empty(0)] * n_units
    post = [np.empty(0)] * n_units
    ip3 = {"amp_uM_per_s": 0.0, "bias_uM": 0.0, "t0_s": 0.0, "pulse_s": 0.0, "period_s": 1.0,
           "n": 0.0}
    clamp = None

    if p.kind == "trains":
        pulses = np.arange(p.train_pulses) / p.train_rate_hz
        pre = [(starts[:, None] + pulses[None, :]).ravel()] * n_units
    elif p.kind == "pairing":
        delays = p.pair_delays_ms or (p.pair_delay_ms,)
        pre = [starts] * n_units
        post = [starts + delays[u % len(delays)] * 1e-3 for u in range(n_units)]
    elif p.kind == "poisson_steps":
        rng = np.random.default_rng(seed)
        steps_per = int(round(period / dt_s))
        rates = np.repeat(np.asarray(p.rates_hz, dtype=float), steps_per)
        rates = np.concatenate([rates, np.zeros(n_steps - rates.size)])
        prob = rates * dt_s
        if prob.max(initial=0.0) > 0.1:
            raise ConfigError(f"protocol.rates_hz = {p.rates_hz!r}: rate x dt = {prob.max():.3g} "
                              "per step; expected <= 0.1 (lower the rate or dt)")
        draws = rng.random((n_steps, n_units)) < prob[:, None]
        pre = [np.flatnonzero(draws[:, u]) * dt_s for u in range(n_units)]
    elif p.kind == "ip3_drive":
        ip3 = {"amp_uM_per_s": p.ip3_amp_uM_per_s, "bias_uM": 0.0, "t0_s": p.offset_s,
               "pulse_s": p.ip3_pulse_s, "period_s": p.ip3_period_s, "n": float(p.n_ip3_pulses)}
    elif p.kind == "ip3_bias":
        ip3 = {"amp_uM_per_s": 0.0, "bias_uM": p.ip3_bias_uM, "t0_s": p.offset_s,
               "pulse_s": p.ip3_pulse_s, "period_s": p.ip3_period_s, "n": float(p.n_ip3_pulses)}
    elif p.kind == "ip3_clamp":
        clamp = np.resize(np.asarray(p.ip3_clamp_uM, dtype=np.float64), n_units)
    elif p.kind == "explicit":
        pre = [np.asarray(p.pre_times_s, dtype=float)] * n_units
        post = [np.asarray(p.post_times_s, dtype=float)] * n_units
    else:  # pragma: no cover - Literal checked by the config loader
        raise ConfigError(f"protocol.kind = {p.kind!r}: unknown")

    pre_t, pre_snapped = _spike_table(pre, dt_s, duration, max_spikes, "presynaptic")
    post_t, post_snapped = _spike_table(post, dt_s, duration, max_spikes, "postsynaptic")
    return Stimulus(dt_s=dt_s, duration_s=duration, period_s=period,
                    boundaries_s=np.arange(n + 1) * period, pre=pre_t, post=post_t, ip3=ip3,
                    clamp_uM=clamp,
                    pre_times_s=pre_snapped, post_times_s=post_snapped)
