"""Plot helpers for simulation traces (long format, rmaat.traces/v1).

Every helper takes ``ax=None`` (a new figure is made then), draws inside
:func:`astro_rmaat.style.plot_style`, returns the axes, and never calls ``plt.show()``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from astro_rmaat.style import new_axes, plot_style

LABELS = {
    "x": "neuron rate x",
    "s": "synapse s",
    "p_s": "short-term process p_s",
    "p_l": "long-term process p_l",
}


def _wide(traces: pd.DataFrame, variable: str) -> pd.DataFrame:
    sub = traces[traces["variable"] == variable]
    if sub.empty:
        raise ValueError(f"variable {variable!r} is not in the traces; available: "
                         f"{sorted(traces['variable'].unique())}")
    return sub.pivot(index="t_s", columns="element", values="value")


def plot_variable(traces: pd.DataFrame, variable: str, *, elements: Iterable[int] | None = None,
                  t_range: Sequence[float] | None = None, ax=None, **line_kw):
    """One line per element of ``variable`` against time (s)."""
    with plot_style():
        ax = new_axes(ax)
        w = _wide(traces, variable)
        if t_range is not None:
            w = w.loc[(w.index >= t_range[0]) & (w.index <= t_range[1])]
        cols = list(w.columns) if elements is None else list(elements)
        for el in cols:
            ax.plot(w.index, w[el], label=f"{variable}[{el}]", **line_kw)
        ax.set_xlabel("time (s)")
        ax.set_ylabel(LABELS.get(variable, variable))
        if len(cols) <= 9:
            ax.legend(ncol=3, fontsize=7)
    return ax


def plot_cycle_boundaries(samples: pd.DataFrame, *, tau_cycle_s: float | None = None, ax=None,
                          show_elements: bool = True):
    """p_l sampled at cycle boundaries against cycle number: every synapse and their mean."""
    with plot_style():
        ax = new_axes(ax)
        w = _wide(samples, "p_l")
        tau = tau_cycle_s or samples.attrs.get("tau_cycle_s") or (w.index[1] - w.index[0])
        k = np.rint(w.index.to_numpy() / tau).astype(int)
        if show_elements:
            for el in w.columns:
                ax.plot(k, w[el], color="0.75", lw=0.8)
        ax.plot(k, w.mean(axis=1), "o-", ms=3, label="mean over synapses")
        ax.set_xlabel("STP cycle k (t = k tau_cycle)")
        ax.set_ylabel("p_l at cycle boundary")
        ax.legend()
    return ax


def plot_overview(traces: pd.DataFrame, samples: pd.DataFrame, *,
                  variables: Sequence[str] = ("x", "s", "p_s", "p_l"),
                  t_range: Sequence[float] | None = None, axes=None):
    """One panel per recorded variable plus the cycle-boundary curve; returns the axes array."""
    import matplotlib.pyplot as plt

    variables = [v for v in variables if v in set(traces["variable"])]
    with plot_style():
        if axes is None:
            _, axes = plt.subplots(len(variables) + 1, 1, figsize=(7, 2.0 * (len(variables) + 1)),
                                   constrained_layout=True)
        for ax, v in zip(axes, variables):
            plot_variable(traces, v, t_range=t_range, ax=ax)
        plot_cycle_boundaries(samples, ax=axes[len(variables)])
    return axes
