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

    traces: pd.DataFrame            # long format: t_s, variable, element, value, unit
    samples: pd.DataFrame           # same columns: the slow variable at protocol boundaries
    attrs: dict[str, Any] = field(default_factory=dict)  # model, tau_cycle_s, dt_s, target, ...
