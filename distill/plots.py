"""Figures of the distill stage. Every helper takes ``ax=None`` and returns ``ax``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from astro_rmaat.style import new_axes, plot_style


def plot_fits(t, y, fits, chosen=None, ax=None, unit: str = "1", variable: str = "p"):
    """The data and every candidate's fitted curve (chosen one thick)."""
    with plot_style():
        ax = new_axes(ax)
        ax.plot(t, y, "o", ms=3, color="0.3", label="data", zorder=3)
        tt = np.linspace(0.0, float(np.max(t)), 400)
        for f in fits:
            lw = 2.4 if chosen is not None and f.name == chosen.name else 1.2
            ax.plot(tt, f.predict(tt), lw=lw, label=f"{f.name} (w={f.akaike_weight:.2f})")
        ax.set_xlabel("time (s)")
        ax.set_ylabel(f"{variable} ({unit})")
        ax.legend(loc="lower right")
    return ax


def plot_residuals(t, y, fits, ax=None):
    """Residuals (data - model) of each candidate."""
    with plot_style():
        ax = new_axes(ax)
        for f in fits:
            ax.plot(t, y - f.predict(t), ".-", ms=3, lw=0.8, label=f.name)
        ax.axhline(0.0, color="0.2", lw=0.8)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("residual")
    return ax


def plot_comparison(fits, ax=None):
    """ΔAICc and ΔBIC per candidate (lower is better), with Akaike weights as labels."""
    with plot_style():
        ax = new_axes(ax)
        names = [f.name for f in fits]
        a = np.array([f.aicc for f in fits]); b = np.array([f.bic for f in fits])
        a = a - np.min(a[np.isfinite(a)]); b = b - np.min(b[np.isfinite(b)])
        x = np.arange(len(fits))
        ax.bar(x - 0.2, np.where(np.isfinite(a), a, 0), 0.4, label="ΔAICc")
        ax.bar(x + 0.2, np.where(np.isfinite(b), b, 0), 0.4, label="ΔBIC")
        for i, f in enumerate(fits):
            flag = "" if f.uncertainties_ok else " (!)"
            ax.annotate(f"w={f.akaike_weight:.2f}{flag}", (x[i], 0), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=8)
        ax.set_xticks(x, names)
        ax.set_yscale("symlog", linthresh=2.0)
        ax.set_ylabel("Δ criterion (lower is better)")
        ax.legend()
    return ax


def plot_schedule(retention, Ts=(4, 8, 16, 32), ax=None, stream: bool = True):
    """RF(t, T) for several T, each with its band where the schedule has one, and RF_inf.

    ``retention`` is a ``retention.json`` path, a retention document (the fit stage passes
    the one it has just built) or a loaded :class:`~astro_rmaat.retention.Retention`; the
    values and bands are the reader's (delta method from the file's Jacobian and covariance).
    """
    import matplotlib as mpl

    from astro_rmaat.retention import Retention, load_retention, validate_document

    if isinstance(retention, Retention):
        ret = retention
    elif isinstance(retention, dict):
        ret = validate_document(retention)
    else:
        ret = load_retention(retention)
    with plot_style():
        ax = new_axes(ax)
        colors = mpl.rcParams["axes.prop_cycle"].by_key().get("color", [None])
        for j, T in enumerate(Ts):
            color = colors[j % len(colors)] if colors else None
            t = np.arange(1, T + 1)
            ax.plot(t, ret.rf(T), "o-", ms=2.5, color=color, label=f"T={T}")
            band = ret.rf_band(T)
            if band is not None:
                ax.fill_between(t, band[0], band[1], alpha=0.2, color=color, lw=0)
        if stream:
            n = max(Ts)
            ax.plot(np.arange(1, n + 1), ret.rf_stream(n), "k--", lw=1.0, label="RF_inf (streaming)")
        ax.set_xlabel("segment t")
        ax.set_ylabel("retention factor")
        ax.set_yscale("log")
        ax.legend()
    return ax


def save_fit_figure(path, t, y, fits, chosen, doc, Ts, unit="1", variable="p") -> Path:
    """The 2×2 summary figure of one fit (data+fits, residuals, comparison, schedule)."""
    import matplotlib.pyplot as plt
    from astro_rmaat.runs import atomic_path

    with plot_style():
        fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
        plot_fits(t, y, fits, chosen, ax=axes[0, 0], unit=unit, variable=variable)
        axes[0, 0].set_title(f"chosen: {chosen.name}")
        plot_residuals(t, y, fits, ax=axes[0, 1])
        plot_comparison(fits, ax=axes[1, 0])
        plot_schedule(doc, Ts, ax=axes[1, 1])
        axes[1, 1].set_title(f"tau_cycle = {doc['tau_cycle_s']:.4g} s "
                             f"({doc.get('band', {}).get('level', math.nan):.0%} band)"
                             if "band" in doc else f"tau_cycle = {doc['tau_cycle_s']:.4g} s (no band)")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
    return Path(path)


def plot_global(sweep, gf, ax=None):
    """Every sweep point's data and its curve from the global fit (shared shape)."""
    import matplotlib as mpl

    with plot_style():
        ax = new_axes(ax)
        cmap = mpl.colormaps["viridis"]
        n = len(sweep.points)
        for i, pt in enumerate(sweep.points):
            color = cmap(i / max(n - 1, 1))
            label = ", ".join(f"{k}={v}" for k, v in pt.grid.items()) or pt.point_id
            ax.plot(pt.curve.t, pt.curve.y, "o", ms=2.5, color=color)
            tt = np.linspace(0.0, float(pt.curve.t.max()), 300)
            ax.plot(tt, gf.point_candidate(pt.point_id).predict(tt), color=color, label=label)
        ax.set_xlabel("time (s)")
        ax.set_ylabel(f"{sweep.points[0].curve.variable} ({sweep.points[0].curve.unit})")
        ax.set_title(f"global {gf.model}: shared {', '.join(gf.shared)}")
        if n <= 10:
            ax.legend(fontsize=7)
    return ax


def save_global_figure(path, sweep, gf, doc, Ts) -> Path:
    """Global fit (data + curves), residuals per point, and the shared schedule."""
    import matplotlib.pyplot as plt
    from astro_rmaat.runs import atomic_path

    with plot_style():
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        plot_global(sweep, gf, ax=axes[0])
        for pt in sweep.points:
            f = gf.point_candidate(pt.point_id)
            axes[1].plot(pt.curve.t, pt.curve.y - f.predict(pt.curve.t), ".-", ms=2, lw=0.6)
        axes[1].axhline(0.0, color="0.2", lw=0.8)
        axes[1].set_xlabel("time (s)"); axes[1].set_ylabel("residual (global fit)")
        plot_schedule(doc, Ts, ax=axes[2])
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
    return Path(path)


def plot_param_vs_key(table, key: str, param: str, ax=None, by: list[str] | None = None):
    """A fitted parameter (± stderr) against one swept key; one line per value of ``by`` keys."""
    with plot_style():
        ax = new_axes(ax)
        groups = table.groupby(by, sort=True) if by else [((), table)]
        for label, sub in groups:
            x = sub[key].to_numpy(dtype=float)
            y = sub[param].to_numpy(dtype=float)
            col = f"{param}_stderr" if f"{param}_stderr" in sub else f"{param}_sd"
            err = sub[col].to_numpy(dtype=float) if col in sub else None
            order = np.argsort(x, kind="stable")
            name = ", ".join(f"{k}={v}" for k, v in zip(by or [], np.atleast_1d(label))) or None
            ax.errorbar(x[order], y[order], yerr=None if err is None else err[order], fmt="o-",
                        ms=3, capsize=2, label=name)
        x = table[key].to_numpy(dtype=float)
        if np.all(x > 0) and np.ptp(x) > 0 and x.max() / x.min() > 8:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(param)
        if by and len(groups) <= 6:
            ax.legend(fontsize=7)
    return ax


def save_sensitivity_figure(path, sweep, fits, table, name, tau_cycle_s, horizons) -> Path:
    """Per swept key: the shape parameters and RF(1, T) against the key; the schedules."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt
    from astro_rmaat.runs import atomic_path
    from distill import retention as R
    from distill.models import get_model

    keys = [k for k in sweep.keys if np.issubdtype(np.asarray(table[k]).dtype, np.number)][:3] or [None]
    shape = list(get_model(name).shape_names)
    T = horizons[min(1, len(horizons) - 1)]
    outputs = shape + [f"rf_first_{T}"]
    ncol = len(outputs) + 1
    with plot_style():
        fig, axes = plt.subplots(len(keys), ncol, figsize=(3.4 * ncol, 3.0 * len(keys)), squeeze=False)
        for i, key in enumerate(keys):
            for j, o in enumerate(outputs):
                if key is None:
                    axes[i, j].plot(table[o].to_numpy(), "o")
                else:
                    plot_param_vs_key(table, key, o, ax=axes[i, j],
                                      by=[k for k in keys if k not in (key, None)] or None)
            ax = axes[i, -1]
            cmap = mpl.colormaps["viridis"]
            vals = table[key].to_numpy(dtype=float) if key else np.arange(len(table))
            lo, hi = float(np.min(vals)), float(np.max(vals))
            for pid, v in zip(table["point_id"], vals):
                f = fits[pid]
                c = cmap(0.0 if hi == lo else (v - lo) / (hi - lo))
                ax.plot(np.arange(1, T + 1), R.rf(name, f.values, tau_cycle_s, T), color=c, lw=1.0)
            ax.set_xlabel("segment t"); ax.set_ylabel(f"RF(t, {T})"); ax.set_yscale("log")
            ax.set_title(f"colour: {key}" if key else "schedules")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
    return Path(path)
