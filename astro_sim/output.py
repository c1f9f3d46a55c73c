"""What a model family's ``run(cfg)`` returns: :class:`SimOutput`, in memory.

:func:`astro_sim.simulate.simulate` writes it into a run directory (``traces.parquet``,
``samples.parquet``, ``meta.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class SimOutput:
    """What a model family's ``run`` returns (in memory; ``simulate`` writes it)."""

    # None once simulate() has handed the table to its writer (which frees it after copying)
    traces: pd.DataFrame | None     # long format: t_s, variable, element, value, unit
    samples: pd.DataFrame | None    # same columns: the slow variable at protocol boundaries
    attrs: dict[str, Any] = field(default_factory=dict)  # model, tau_cycle_s, dt_s, target, ...
