"""The retention schedule as the model reads it: the RF table of a ModelConfig.

``retention_table(cfg)`` reads the ``retention.json`` named in the config (through
``astro_rmaat.retention``, NumPy, imported only when a file is needed) and lays RF(t, T)
out as the (T_cap, T_cap) table ``RMAAT.rf_table``: row T-1 holds RF(1..T, T). The
``stream`` schedule repeats RF_inf(t) in every row; ``reversed`` hands on ``ltp``'s values in
reverse order, RF(T-t, T) at hand-off t < T (the hand-offs a sequence of T segments applies:
its last segment's output is read unscaled, so RF(T, T), kept in place, is never applied; the
same applied values and capacity, rising where LTP falls); ``flat`` (RF = 1/T) needs no file;
``none`` and the archs without RF need no table. Checkpoints carry the table in their
state_dict, so loading one never reads the file again (rmaat_model.checkpoint).
"""

from __future__ import annotations

import torch

from astro_rmaat.errors import ConfigError
from rmaat_model.model_config import ModelConfig


def retention_table(cfg: ModelConfig) -> torch.Tensor | None:
    """RF table (T_cap, T_cap) for cfg, with RF(t, T) at [T-1, t-1]; None when no file is needed."""
    mode = cfg.effective_retention
    if not cfg.has_memory or mode == "none":
        return None
    Tc = cfg.max_segments
    if mode == "flat":  # RF(t, T) = 1/T: the same total capacity as an LTP schedule, no shape
        T = torch.arange(1, Tc + 1, dtype=torch.float64)
        return torch.tril(torch.ones(Tc, Tc, dtype=torch.float64)) / T[:, None]
    from astro_rmaat import retention as retention_io  # NumPy only

    path = cfg.retention_file if cfg.retention_file is not None else retention_io.default_retention_path()
    schedule = retention_io.load_retention(path)
    if schedule.max_segments < Tc:
        raise ConfigError(f"retention file {str(path)!r} tabulates {schedule.max_segments} cycles but the model "
                          f"needs up to T = ceil(max_len / segment_len) = {Tc} segments; regenerate it with "
                          "more cycles or lower max_len")
    table = torch.zeros(Tc, Tc, dtype=torch.float64)
    if mode == "stream":  # RF_inf(t): the same in every row, no T needed
        table[:] = torch.as_tensor(schedule.rf_stream(Tc).tolist(), dtype=torch.float64)
    else:  # ltp, learned initialised from ltp, and ltp's applied hand-offs reversed
        for T in range(1, Tc + 1):
            row = torch.as_tensor(schedule.rf(T).tolist(), dtype=torch.float64)
            if mode == "reversed":
                row[:T - 1] = row[:T - 1].flip(0)
            table[T - 1, :T] = row
    return table

