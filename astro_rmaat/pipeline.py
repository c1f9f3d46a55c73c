"""``rmaat pipeline``: simulate -> fit -> retention.json -> train RMAAT and a baseline -> report.

The project's main job and the first thing a new user runs (``make demo``). Each stage
is called through its public entry function and writes its own run directory; the stages
meet only at files::

    OUT/sim/                 astro_sim.simulate      traces.parquet, samples.parquet
    OUT/fit/                 distill.fit             fit.json, retention.json, fit.png
    OUT/data/<task>/         rmaat_model.data        official LRA layout (generated tasks)
    OUT/train/<model>/       rmaat_model.train       model.safetensors, ckpt.pt, metrics.csv
    OUT/report.md, OUT/figures/*.png, OUT/results.json, OUT/config.json, OUT/meta.json

Rerunning on the same OUT resumes: a stage whose directory holds a finished run is
reused, an interrupted one is resumed (training from its checkpoint). A different config
or a finished pipeline is refused; nothing is half-overwritten.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from astro_rmaat import config as cfgmod
from astro_rmaat import runs
from astro_rmaat.errors import ConfigError


@dataclass(frozen=True)
class PipelineConfig:
    family: Literal["rmaat_network", "tripartite"] = "rmaat_network"  # biophysical model family to distil
    sim_set: tuple[str, ...] = ()              # KEY=VALUE overrides of the simulation config (see rmaat simulate --show-defaults)
    fit_models: tuple[str, ...] = ()           # candidate macro models (empty: all)
    task: str = "listops"                      # training task: listops (generated here) or recall (synthetic)
    models: tuple[str, ...] = ("rmaat", "transformer")  # first is the RMAAT model, the rest are baselines on the same budget
    budget_minutes: float = 1.5                # wall-clock training budget per model, minutes
    n_train: int = 4000                        # generated training examples (ListOps: official algorithm)
    n_eval: int = 500                          # generated validation and test examples each
    min_len: int = 500                         # ListOps length bounds (official: 500 < len < 2000)
    max_len: int = 2000
    seed: int = 0                              # one seed for every stage
    quick: bool = False                        # tiny sizes for tests and notebooks (seconds, not minutes)

    def __post_init__(self) -> None:
        cfgmod.require_positive("budget_minutes", self.budget_minutes, "min")
        for name in ("n_train", "n_eval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} = {getattr(self, name)!r}: expected a positive integer")
        if not self.models:
            raise ConfigError("models is empty: expected at least one model to train, e.g. rmaat")
        if not 0 < self.min_len < self.max_len:
            raise ConfigError(f"min_len = {self.min_len!r}, max_len = {self.max_len!r}: expected 0 < min_len < max_len")
