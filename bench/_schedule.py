"""A retention.json for benchmarks when the shipped default is not there yet.

Benchmarks measure cost, which the schedule's values do not change; they use the given
file, else the shipped default, else this exponential stand-in (p = 1 - exp(-t / 3 cycles)),
and print which one they used.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from astro_rmaat import retention
from astro_rmaat.errors import DataError


def exponential_document(tau_cycles: float = 3.0, K: int = 256) -> dict:
    p = [1 - math.exp(-k / tau_cycles) for k in range(K + 1)]
    return {"schema": retention.SCHEMA, "tau_cycle_s": 1.0, "p_inf": 1.0,
            "model": {"name": "exp_saturation", "params": {"p_inf": {"value": 1.0, "stderr": None},
                                                          "tau": {"value": tau_cycles, "stderr": None}}},
            "candidates": [], "curve": {"t_cycles": list(range(K + 1)), "p": p},
            "source": {"traces": "bench stand-in (exponential)", "sha256": "0" * 64}}


def retention_file(given: str | None) -> tuple[str, str]:
    """(path, description) of the schedule a benchmark uses."""
    if given:
        return given, given
    try:
        path = retention.default_retention_path()
        return str(path), f"shipped default {path}"
    except DataError:
        tmp = Path(tempfile.mkdtemp(prefix="rmaat-bench-")) / "retention.json"
        tmp.write_text(json.dumps(exponential_document()))
        return str(tmp), "exponential stand-in, tau = 3 cycles (no shipped default yet)"
