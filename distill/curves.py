"""The curve a fit reads: one slow variable over time, taken from a traces file and checked.

``load_curve`` selects one curve of a traces/samples file (or of a simulation run
directory) by variable, element and reduction; ``check_curve`` and ``check_rises`` are the
input checks every fit applies, each failing with one clear :class:`DataError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from astro_rmaat import runs
from astro_rmaat.errors import DataError, show


@dataclass
class Curve:
    """One curve selected from a traces file, with where it came from."""

    t: np.ndarray                 # s
    y: np.ndarray                 # trace units
    variable: str
    unit: str
    tau_cycle_s: float
    attrs: dict[str, Any]
    path: Path
    sha256: str


def check_curve(t, y, n_params: int = 0, where: str = "curve") -> tuple[np.ndarray, np.ndarray]:
    """Float arrays of a fittable curve, or one clear :class:`DataError`."""
    t = np.asarray(t, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if t.size == 0 or y.size == 0:
        raise DataError(f"{where}: the trace is empty; expected samples of the slow variable")
    if t.shape != y.shape:
        raise DataError(f"{where}: {t.size} times but {y.size} values; expected one value per time")
    for label, arr in (("time", t), ("value", y)):
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: {label} at index {i} is {show(arr[i])}; expected finite numbers "
                            "(NaN/inf in the trace)")
    if t.size > 1 and not np.all(np.diff(t) > 0):
        i = int(np.flatnonzero(np.diff(t) <= 0)[0])
        raise DataError(f"{where}: time is not increasing (t[{i}] = {show(t[i])} s, "
                        f"t[{i + 1}] = {show(t[i + 1])} s); expected strictly increasing times")
    if t[0] < 0:
        raise DataError(f"{where}: first time {show(t[0])} s is negative; expected time since the "
                        "protocol started (t >= 0)")
    if t.size < n_params + 2:
        raise DataError(f"{where}: {t.size} points for a model with {n_params} fitted parameters; "
                        f"expected at least {n_params + 2} (parameters plus two)")
    if np.ptp(y) == 0:
        raise DataError(f"{where}: the trace is constant ({show(y[0])}); nothing saturates")
    return t, y


def check_rises(t: np.ndarray, y: np.ndarray, where: str = "curve") -> None:
    """A retention schedule needs a trace that rises: its last quarter above its first.

    Every macro model here is a saturating rise, so a falling trace can be fitted but gives
    no schedule; refusing it here stops the run before its directory is made.
    """
    q = max(1, y.size // 4)
    first, last = float(np.mean(y[:q])), float(np.mean(y[-q:]))
    if not last > first:
        raise DataError(f"{where}: the trace falls (mean of the first {q} sample(s) {first:.4g}, "
                        f"of the last {q} {last:.4g}); expected a rising, saturating trace")


def resolve_traces_path(path: str | os.PathLike) -> Path:
    """A traces/samples file, or a simulation run directory (its ``samples.parquet``)."""
    p = Path(path)
    if p.is_dir():
        for name in ("samples.parquet", "traces.parquet"):
            if (p / name).is_file():
                return p / name
        raise DataError(f"directory {str(p)!r} holds neither samples.parquet nor traces.parquet "
                        "(nor design.parquet of a sweep); expected a simulation run directory")
    if not p.exists():
        raise DataError(f"traces path {str(p)!r} does not exist")
    if not p.is_file():
        raise DataError(f"traces path {str(p)!r} is neither a directory nor a regular file; "
                        "expected a Parquet file or a simulation run directory")
    return p


def load_curve(path: str | os.PathLike, *, variable: str | None = None, element: int | None = None,
               reduce: Literal["mean", "sum"] = "mean", tau_cycle_s: float | None = None) -> Curve:
    """Read ``path`` and select one curve: ``variable`` (None: the trace's slow variable, else
    ``p_l``), one ``element`` or all of them combined by ``reduce``; ``tau_cycle_s`` None
    takes the cycle length from the trace's attrs."""
    from astro_rmaat.traces import read_traces, select_curve

    p = resolve_traces_path(path)
    df = read_traces(p)
    attrs = dict(df.attrs)
    variable = variable or attrs.get("slow_variable") or "p_l"
    t, y = select_curve(df, variable, element, reduce)
    units = df.loc[df["variable"] == variable, "unit"].unique().tolist()
    tau_cycle = tau_cycle_s if tau_cycle_s is not None else attrs.get("tau_cycle_s")
    if tau_cycle is None or not (isinstance(tau_cycle, (int, float)) and tau_cycle > 0):
        raise DataError(f"traces file {str(p)!r}: tau_cycle_s = {tau_cycle!r} in its attrs; expected "
                        "a positive cycle length in seconds (pass tau_cycle_s in the fit config)")
    t, y = check_curve(t, y, where=f"{str(p)!r} variable {variable!r}")
    check_rises(t, y, where=f"{str(p)!r} variable {variable!r}")
    return Curve(t=t, y=y, variable=variable, unit=units[0] if units else "1",
                 tau_cycle_s=float(tau_cycle), attrs=attrs, path=p, sha256=runs.sha256_file(p))
