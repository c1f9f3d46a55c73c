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

QUICK = os.environ.get("RMAAT_QUICK", "0") == "1"   # the tests run this notebook quickly
N_CYCLES = 20 if QUICK else 40                      # STP cycles of the network protocol
SEED = 1

# %% [markdown]
# # 01 — Simulating neuron–astrocyte long-term plasticity
#
# The RMAAT network (after Kozachkov, Slotine & Krotov 2025, split into short- and
# long-term astrocytic processes as in the RMAAT paper): rate neurons `x`, synapses `s`,
# short-term processes `p_s` coupled across synapses by the distance-dependent tensor
# `T_ijkl`, and long-term processes `p_l` that integrate synaptic activity. Everything
# below is a real Brian2 network with units; the parameter set `rmaat-network/v1` lists the
# value, unit, meaning and reason of every parameter.

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from astro_rmaat.style import STYLE_FILE, plot_style
from astro_sim.network import params as network_params
from astro_sim.simulate import load_sim_config, run

plt.style.use(str(STYLE_FILE))
pd.DataFrame(network_params.describe()).head(20)

# %% [markdown]
# The default protocol: repeated STP cycles (drive on for part of each cycle, then off).
# One cycle is one RMAAT segment.

# %%
cfg = load_sim_config(overrides=[f"protocol.n_cycles={N_CYCLES}", f"seed={SEED}"])
print(cfg.protocol)
out = run(cfg)
traces, samples = out.traces, out.samples
print({k: out.attrs[k] for k in ("model", "tau_cycle_s", "n_cycles", "target", "param_set")})

# %%
from astro_sim.plots import plot_overview

plot_overview(traces, samples)   # x, s, p_s, p_l of every element, and p_l at cycle boundaries
plt.show()
pl = samples[samples["variable"] == "p_l"]

# %% [markdown]
# `p_s` rises and relaxes within every cycle; `p_l` integrates across cycles and
# saturates. At the cycle boundaries (the curve `distill` fits) the increments shrink:

# %%
curve = pl.groupby("t_s")["value"].mean()
dp = np.diff(curve.to_numpy())
print(f"p_l increments: first {dp[0]:.4g}, last {dp[-1]:.4g}, last/first {dp[-1] / dp[0]:.3f}")
print("monotone rise:", bool(np.all(dp > 0)))
p = cfg.params
print(f"time scales: p_s relaxes in {p.tau_short_eff_s:.3g} s, p_l in {p.tau_long_eff_s:.3g} s "
      f"({p.tau_long_eff_s / p.tau_short_eff_s:.0f}x apart)")

# %% [markdown]
# ## Distance-dependent coupling
#
# Neurons have positions; each astrocytic process sits at its synapse's midpoint and
# `T_ijkl = c_T exp(-dist / l_T)`. The coupling matrix for this geometry:

# %%
from astro_sim.network.params import coupling_matrix, neuron_positions_um, synapse_pairs

pos = neuron_positions_um(cfg.geometry, cfg.seed)
T = coupling_matrix(cfg.params, pos, *synapse_pairs(cfg.geometry))
with plot_style():
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    im = ax.imshow(T, cmap="viridis")
    ax.set_xlabel("process kl"); ax.set_ylabel("process ij"); ax.set_title("T_ijkl")
    fig.colorbar(im, ax=ax)
    plt.show()

# %% [markdown]
# ## An independent check: SciPy
#
# `astro_sim.network.reference` writes the same equations again in NumPy and integrates them with
# `solve_ivp` (DOP853, tight tolerances, piecewise between drive switch times), from the
# same parameter object. The Brian2 trace (RK4, dt = 1 ms) must agree.

# %%
from astro_sim.network import reference

ref = reference.integrate(cfg)
brian_pl = pl.pivot(index="t_s", columns="element", values="value").to_numpy().T
err = np.max(np.abs(brian_pl - ref.boundaries_p_l))
print(f"max |p_l(Brian2) - p_l(SciPy)| at cycle boundaries: {err:.2e} (p_l scale {ref.p_l.max():.3f})")

# %% [markdown]
# ## Tripartite synapse
#
# The second model family is spiking and biophysical: Tsodyks–Markram release whose
# probability is modulated by gliotransmission (`Gamma_S`), a G-ChI astrocyte (IP3 `I`,
# Ca2+ `C`, gate `h`) that releases gliotransmitter each time `C` crosses `C_Theta`
# upward, and a Graupner–Brunel calcium trace `c` driving the long-term efficacy `rho`
# (parameters: Computational Glioscience ch. 18 and Graupner & Brunel 2012).
#
# First the astrocyte: repeated 20 Hz trains with release-increasing gliotransmission
# (`alpha` > `U_0*`) and a stronger IP3 production.

# %%
import json

run_sim = run

trains_cfg = load_sim_config(model="tripartite", overrides=[
    "protocol.kind=trains", f"protocol.n_trains={2 if QUICK else 5}",
    "params.alpha=0.9", "params.O_beta=3"])
trains = run_sim(trains_cfg)
tr = trains.traces

fig, axes = plt.subplots(4, 1, figsize=(8, 7), sharex=True)
for ax, var in zip(axes, ["Y_S", "I", "C", "Gamma_S"]):
    sub = tr[tr["variable"] == var]
    ax.plot(sub["t_s"], sub["value"])
    ax.set_ylabel(f"{var} [{sub['unit'].iloc[0]}]")
axes[2].axhline(trains_cfg.params.C_Theta, color="k", ls=":", lw=1)
axes[-1].set_xlabel("time [s]")
n_rel = int(tr.loc[tr["variable"] == "n_glio", "value"].max())
axes[0].set_title(f"{n_rel} gliotransmitter release(s): one per upward crossing of C_Theta (dotted)")
print(f"gliotransmitter releases: {n_rel}")
plt.show()

# %% [markdown]
# Then the long-term efficacy: 1 Hz pre–post pairing at four pairing delays, one unit
# each, simulated in one vectorised network. `rho` sampled once per pairing period is the
# slow, saturating trace that `distill` fits (the reference table: `rho` approaches
# 0.436 / 0.502 / 0.555 / 0.543 with time constants 21 / 13.5 / 14.3 / 17.1 s).

# %%
delays = [-20.0, 0.0, 10.0, 20.0]
pair_cfg = load_sim_config(model="tripartite", overrides=[
    "protocol.kind=pairing", f"protocol.n_pairs={20 if QUICK else 60}",
    f"protocol.pair_delays_ms={json.dumps(delays)}", "n_units=4", "rho_init=[0,0,0,0]",
    'record=["c", "rho"]'])
pairing = run_sim(pair_cfg)
fig, ax = plt.subplots(figsize=(7, 3.5))
for el, grp in pairing.samples.groupby("element"):
    ax.plot(grp["t_s"], grp["value"], marker=".", label=f"Δt = {delays[el]:+g} ms")
ax.set_xlabel("time [s]")
ax.set_ylabel("rho at each pairing period")
ax.legend()
plt.show()
final = pairing.samples.groupby("element")["value"].last()
print("rho after the pairs:", {f"{delays[el]:+g} ms": round(v, 3) for el, v in final.items()})
