"""Elastic Memory: the history of hidden states compressed online into HiPPO-LegS coefficients.

The construction is a reading of the Elastic Memory abstract (Song, Kai, Lu, Qiu, Lin, arXiv
2602.11212, 2026: history as samples of a continuous signal, compressed online into a fixed-size
state by HiPPO's optimal polynomial projection, retrieved by *polynomial sampling* at points that
can be changed at test time) on top of HiPPO-LegS (Gu et al., arXiv 2008.07669). The paper's full
text and code were not reachable; every choice below is this module's own.

Interface (the contract a segment-recurrent model uses)

    mem = ElasticMemory(d_model, d_mem, n_coef, n_samples, sampling="uniform",
                        segment_len=128, max_segments=16)
    c = mem.initial_state(batch, dtype, device)       # (B, d_mem, n_coef) zeros: no history yet
    c = mem.write(c, h, t, token_mask)                # after segment t (0-based)
    m = mem.read(c, t)                                # (B, S, d_model): memory tokens for segment t+1
    mem.sampling = "recent"                           # any time, e.g. at evaluation; no retraining

    d_model       D, width of the hidden states written and of the memory tokens read
    d_mem         features compressed per token: write maps D -> d_mem (learned linear map)
    n_coef        Legendre coefficients kept per feature (the state is (B, d_mem, n_coef))
    n_samples     S, memory tokens read (sampling points)
    sampling      "uniform" | "recent" | a list of S fractions in [0, 1] (hippo.sample_points)
    segment_len   N, tokens per segment; h of every write is (B, N, D)
    max_segments  T_cap: the block matrices of segments 0..T_cap-1 are cached buffers; a later
                  segment gets its matrices from the same closed form at run time

write(c, h, t, token_mask)
    h (B, N, D) hidden states of segment t's tokens (after the last block); token_mask (B, N)
    bool, True for real tokens, real tokens first (padding only at a sequence's end). The d_mem
    features f = W_write h of the real tokens extend the history: c <- Phi_t c + Gamma_t f, one
    batched matrix product (segment t holds tokens t*N+1 .. t*N+N). A sequence with n_b < N real
    tokens in segment t gets the block matrices of its own n_b (computed at run time by the closed
    form of ``hippo.block_matrices``): padded tokens add nothing and do not advance its clock. A
    sequence with no real token keeps c unchanged. Gradients reach h, W_write and c. Each write
    reads two flags back from the device (mask well-formed, any sequence ending inside): one
    synchronisation per segment.
read(c, t)
    The history reconstructed at the S sampling fractions x_s of its span [0, t_tokens]
    (f(x_s t) ~ sum_n c_n g_n(x_s), oldest point first), mapped d_mem -> D by a learned linear map
    W_read: (B, S, D). LegS coefficients live on fractions of the span, so the read does not
    depend on t; t is only checked (an integer >= 0, the segment just written). Segment 0 has
    no history to read: its memory tokens are the model's own (reading the zero state gives
    W_read's bias alone).

Carried state: c alone, one tensor, so AMRB replays segments from saved states unchanged
(tests/rmaat_model/test_elastic.py checks AMRB's gradients against BPTT's through write/read).

Only W_write and W_read are parameters. The block matrices and the sampling basis are derived
from the constructor's arguments and are non-persistent buffers (float64, cast to the state's
dtype at use; ``module.float()`` casts them like any buffer), so a checkpoint does not depend
on the sampling and loads under any other.
Under ``torch.autocast`` the two linear maps run in autocast's dtype, the state's recurrence and
the reconstruction in the state's dtype (autocast off around them).
Bad constructor arguments and bad sampling values raise ConfigError; tensors of the wrong shape
raise DataError.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from astro_rmaat.errors import ConfigError, DataError
from rmaat_model import hippo
from rmaat_model.kernels import autocast_off


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"elastic memory {name} = {value!r}: expected an integer >= 1")
    return value


class ElasticMemory(nn.Module):
    def __init__(self, d_model: int, d_mem: int, n_coef: int, n_samples: int,
                 sampling: str | Sequence[float] = "uniform", segment_len: int = 128,
                 max_segments: int = 16):
        super().__init__()
        for name, value in (("d_model", d_model), ("d_mem", d_mem), ("n_coef", n_coef),
                            ("n_samples", n_samples), ("segment_len", segment_len),
                            ("max_segments", max_segments)):
            _positive_int(name, value)
        self.d_model, self.d_mem, self.n_coef, self.n_samples = d_model, d_mem, n_coef, n_samples
        self.segment_len, self.max_segments = segment_len, max_segments
        self.write_proj = nn.Linear(d_model, d_mem)                       # W_write: D -> d_mem
        self.read_proj = nn.Linear(d_mem, d_model)                        # W_read: d_mem -> D
        N = segment_len
        Phi, Gamma = hippo.block_matrices(torch.arange(max_segments) * N, N, N, n_coef)
        self.register_buffer("Phi", Phi, persistent=False)               # (T_cap, n_coef, n_coef)
        self.register_buffer("Gamma", Gamma, persistent=False)           # (T_cap, n_coef, N)
        self.register_buffer("read_basis", torch.zeros(n_samples, n_coef, dtype=torch.float64),
                             persistent=False)                           # (S, n_coef): g_n(x_s)
        self.sampling = sampling

    # -- sampling: a plain attribute, validated and turned into the read basis when set -----------
    @property
    def sampling(self) -> str | tuple[float, ...]:
        return self._sampling

    @sampling.setter
    def sampling(self, value: str | Sequence[float]) -> None:
        x = hippo.sample_points(value, self.n_samples)                     # raises ConfigError
        self.read_basis = hippo.scaled_legendre(self.n_coef, x).to(self.read_basis.device)
        self._sampling = value if isinstance(value, str) else tuple(float(v) for v in value)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_mem={self.d_mem}, n_coef={self.n_coef}, "
                f"n_samples={self.n_samples}, sampling={self._sampling!r}, "
                f"segment_len={self.segment_len}, max_segments={self.max_segments}")

    # -- the contract ------------------------------------------------------------------------------
    def initial_state(self, batch: int, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> torch.Tensor:
        """c before any token: zeros (batch, d_mem, n_coef)."""
        return torch.zeros(batch, self.d_mem, self.n_coef, dtype=dtype, device=device)

    def _check_state(self, c: torch.Tensor) -> None:
        if c.dim() != 3 or c.shape[1:] != (self.d_mem, self.n_coef):
            raise DataError(f"elastic memory state: expected (B, d_mem={self.d_mem}, n_coef={self.n_coef}); "
                            f"got {tuple(c.shape)}")

    @staticmethod
    def _check_t(t) -> None:
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise DataError(f"segment index t = {t!r}: expected an integer >= 0 (0-based)")

    def write(self, c: torch.Tensor, h: torch.Tensor, t: int, token_mask: torch.Tensor) -> torch.Tensor:
        """c (B, d_mem, n_coef) after segment t-1 -> the same after segment t (module doc)."""
        self._check_state(c)
        self._check_t(t)
        B, N = c.shape[0], self.segment_len
        if h.shape != (B, N, self.d_model):
            raise DataError(f"elastic memory write: h must be (B={B}, segment_len={N}, d_model={self.d_model}); "
                            f"got {tuple(h.shape)}")
        if token_mask.shape != (B, N) or token_mask.dtype != torch.bool:
            raise DataError(f"elastic memory write: token_mask must be a bool tensor (B={B}, segment_len={N}); "
                            f"got {tuple(token_mask.shape)} {token_mask.dtype}")
        n_real = token_mask.sum(dim=1)                                        # (B,)
        prefix = torch.arange(N, device=token_mask.device)[None, :] < n_real[:, None]
        is_prefix, any_partial = torch.stack([(prefix == token_mask).all(),
                                              ((n_real > 0) & (n_real < N)).any()]).tolist()
        if not is_prefix:
            raise DataError("elastic memory write: token_mask has padding before a real token; "
                            "expected real tokens first, padding only at a sequence's end")
        f = self.write_proj(h).to(c.dtype)                                    # (B, N, d_mem)
        # the recurrence in the state's own dtype: under autocast the products c @ Phi^T would
        # round every segment's state to bfloat16, and the rounding would add up over the history
        with autocast_off(c):
            return self._update(c, f, t, n_real, any_partial)

    def _update(self, c, f, t: int, n_real, any_partial: bool) -> torch.Tensor:
        N = self.segment_len
        if t < self.max_segments:
            Phi, Gamma = self.Phi[t].to(c.dtype), self.Gamma[t].to(c.dtype)  # (n, n), (n, N)
        else:
            Phi, Gamma = hippo.block_matrices(t * N, N, N, self.n_coef, dtype=c.dtype, device=c.device)
        new = c @ Phi.T + (Gamma @ f).transpose(1, 2)                         # (B, d_mem, n)
        full = (n_real == N)[:, None, None]                                   # (B, 1, 1)
        if any_partial:  # sequences ending inside this segment: matrices of their own n_real
            Phi_b, Gamma_b = hippo.block_matrices(t * N, n_real, N, self.n_coef, dtype=c.dtype,
                                                  device=c.device)            # (B, n, n), (B, n, N)
            partial = c @ Phi_b.transpose(1, 2) + (Gamma_b @ f).transpose(1, 2)
            new = torch.where(full, new, partial)
        return torch.where((n_real == 0)[:, None, None], c, new)

    def read(self, c: torch.Tensor, t: int) -> torch.Tensor:
        """c (B, d_mem, n_coef) after segment t -> S memory tokens (B, S, d_model) for segment t+1."""
        self._check_state(c)
        self._check_t(t)
        with autocast_off(c):   # the reconstruction in the state's dtype, as the recurrence
            y = c @ self.read_basis.to(c.dtype).T                             # (B, d_mem, S)
        return self.read_proj(y.transpose(1, 2).to(self.read_proj.weight.dtype))
