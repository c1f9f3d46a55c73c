# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
import os

QUICK = os.environ.get("RMAAT_QUICK", "0") == "1"   # tests run the notebook quickly
OUT_DIR = os.environ.get("RMAAT_NOTEBOOK_OUT")        # where to write the run (None: a temp dir)

# %% [markdown]
# # Astrocytic LTP in the RMAAT neuron–astrocyte network
#
# Rate neurons `x`, synapses `s`, short-term astrocytic processes `p_s` coupled across
# processes by a distance-dependent tensor `T`, and long-term processes `p_l`
# (DESIGN.md; after Kozachkov, Slotine & Krotov 2025, split into short and long term as in
# RMAAT). The network is driven by repeated STP cycles; the long-term process `p_l`,
# sampled at the cycle boundaries, is the curve `distill` fits.

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from astro_rmaat.traces import read_traces
from astro_sim import plots
from astro_sim.network_params import PARAM_SET_ID, describe
from astro_sim.simulate import load_sim_config, simulate

# %% [markdown]
# ## The parameter set
# Every value with its unit, meaning and the reason it was chosen.

# %%
print(PARAM_SET_ID)
pd.DataFrame(describe()).set_index("name")

# %% [markdown]
# ## Run the default network
# 3 presynaptic × 3 postsynaptic neurons (9 synapses), 40 cycles of 1 s with the drive on
# for the first 0.4 s of each cycle, all neurons driven.

# %%
cfg = load_sim_config()
out_root = Path(OUT_DIR) if OUT_DIR else Path(tempfile.mkdtemp(prefix="rmaat_nb01_"))
run_dir = simulate(cfg, out_root / "sim")
traces = read_traces(run_dir / "traces.parquet")
samples = read_traces(run_dir / "samples.parquet")
print(run_dir, len(traces), "trace rows")

# %% [markdown]
# ## Neurons, synapses and astrocytic processes (first five cycles)

# %%
axes = plots.plot_overview(traces, samples, t_range=(0, 5))

# %% [markdown]
# ## The cycle-boundary curve
# `p_l` at t = k·tau_cycle rises every cycle and saturates: the increments shrink
# geometrically, while `p_s` returns to rest between cycles.

# %%
ax = plots.plot_cycle_boundaries(samples)
mean = samples.groupby("t_s")["value"].mean().to_numpy()
inc = np.diff(mean)
print(f"first increment {inc[0]:.4f}, last {inc[-1]:.5f}, ratio {inc[-1] / inc[0]:.3f}")
print(f"p_l reaches 90 % of its final value after {int(np.argmax(mean >= 0.9 * mean[-1]))} cycles")

# %% [markdown]
# ## Cross-check: SciPy `solve_ivp` on the same equations and parameters

# %%
import dataclasses

from astro_sim.network import run as run_network
from astro_sim.reference import integrate

check = dataclasses.replace(cfg, protocol=dataclasses.replace(cfg.protocol, n_cycles=2 if QUICK else 5))
brian = run_network(check).traces
ref = integrate(check)
fig, ax = plt.subplots()
with plots.plot_style():
    for el in (0, 8):
        b = brian[(brian.variable == "p_s") & (brian.element == el)]
        ax.plot(b.t_s, b.value, label=f"Brian2 p_s[{el}]")
        ax.plot(ref.t_s, ref.p_s[el], "--", label=f"solve_ivp p_s[{el}]")
    ax.set_xlabel("time (s)")
    ax.legend()
dev = np.abs(brian[brian.variable == "p_s"].pivot(index="element", columns="t_s", values="value").to_numpy()
             - ref.p_s).max()
print(f"max |p_s| deviation at dt = {check.dt_ms} ms: {dev:.2e} (first order in dt, see tests)")
