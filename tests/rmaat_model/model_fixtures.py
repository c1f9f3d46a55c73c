"""Shared helpers of the rmaat_model model tests: an exponential retention.json fixture,
metrics rows without their wall times, and equality to the bit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from astro_rmaat import retention

TAU_CYCLES = 3.0  # fixture curve p(t) = 1 - exp(-t / tau), t in cycles
TIMING = {"elapsed_s"}   # the metrics column that differs between identical runs


def untimed(rows: list[dict]) -> list[dict]:
    """metrics.csv rows without their wall times: what two runs of one config share."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def retention_doc(tau: float = TAU_CYCLES, K: int = 64) -> dict:
    k = np.arange(K + 1)
    p = 1 - np.exp(-k / tau)
    return {"schema": retention.SCHEMA, "tau_cycle_s": 1.0, "p_inf": 1.0,
            "model": {"name": "exp_saturation", "params": {"p_inf": {"value": 1.0, "stderr": 0.01},
                                                          "tau": {"value": tau, "stderr": 0.1}}},
            "candidates": [], "curve": {"t_cycles": k.tolist(), "p": p.tolist()},
            "source": {"traces": "fixture", "sha256": "0" * 64}}


def write_retention(path: Path, **kw) -> Path:
    path.write_text(json.dumps(retention_doc(**kw)))
    return path


def rf_closed_form(t: int, T: int, tau: float = TAU_CYCLES) -> float:
    """RF(t, T) of the exponential curve: (1-q) q^(t-1) / (1-q^T), q = exp(-1/tau)."""
    q = math.exp(-1.0 / tau)
    return (1 - q) * q ** (t - 1) / (1 - q ** T)


def rf_stream_closed_form(t: int, tau: float = TAU_CYCLES) -> float:
    q = math.exp(-1.0 / tau)
    return (1 - q) * q ** (t - 1)


@pytest.fixture(autouse=True)
def one_thread():
    """These tests use tiny tensors: one intra-op thread is faster than several, and on a
    shared machine oversubscribed threads cost 10x. Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to the bit, signed zeros and infinities included; a NaN matches a NaN whatever its
    sign and payload bits (ATen's own vector and scalar loops give NaNs different bits)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    ints = {torch.float32: torch.int32, torch.float64: torch.int64}[a.dtype]
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a.contiguous().view(ints)[~nan], b.contiguous().view(ints)[~nan])
