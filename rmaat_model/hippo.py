"""HiPPO-LegS: online compression of a history into Legendre coefficients, in blocks of tokens.

HiPPO-LegS (Gu, Dao, Ermon, Rudra, Ré, NeurIPS 2020, arXiv 2008.07669) keeps, at time t, the
coefficients of the history f on [0, t] in the scaled Legendre basis under the uniform measure
mu_t = (1/t) 1[0, t]. In fractions x = s / t of the span (x in [0, 1]):

    g_n(x) = sqrt(2n+1) P_n(2x - 1)            orthonormal on [0, 1]
    c_n(t) = int_0^1 f(x t) g_n(x) dx            n = 0 .. n_coef-1
    f(x t) ~ sum_n c_n(t) g_n(x)                 reconstruction (``reconstruct``)

and the coefficients obey dc/dt = -(1/t) A c + (1/t) B f(t) with
A[n,k] = sqrt(2n+1) sqrt(2k+1) (n > k), n+1 (n = k), 0 (n < k); B[n] = sqrt(2n+1).

Time is counted in tokens: token k (1-based) holds the value f_k and covers [k-1, k].

Discretisation: zero-order hold (ZOH), exact for piecewise-constant input
    In log-time s = log t the system is dc/ds = -A c + B f, time-invariant, so holding f_k
    constant on [k-1, k] integrates exactly:
        c_k = E_k c_{k-1} + (I - E_k) A^{-1} B f_k,   E_k = exp(-A log(k / (k-1))),   E_1 = 0
    (A^{-1} B = e_0: the coefficients of a constant). The state after K tokens is then *exactly*
    the Legendre projection of the step function that takes the value f_k on the k-th of K equal
    cells of [0, 1]. Consequences, each checked in tests/rmaat_model/test_hippo.py:
      * a polynomial of degree < n_coef sampled at cell midpoints is recovered with the midpoint
        rule's O(1/K^2) error. The generalised bilinear transform with step 1/k -- forward Euler
        (the paper's c_{k+1} = (I - A/k) c_k + B f_k / k), bilinear, backward Euler -- is O(1/K)
        here, with its largest error from the first tokens, where the step 1/k is not small:
        on a cubic with n_coef = 8 and K = 1024 tokens the worst reconstruction error is
        4e-5 (ZOH), 4e-3 (forward), 3e-2 (bilinear), 6e-2 (backward);
      * timescale robustness is exact in the discrete setting: holding each sample for m tokens
        gives the same state as the original sequence, to round-off;
      * the per-segment block update has a closed form (below), so no recurrence has to be
        unrolled, at construction or at run time.
    The other three discretisations are kept (``step_matrices``, ``legs_recurrence``) as the
    references the choice was measured against: bench/hippo_discretisation.py prints their
    reconstruction errors side by side (figures in docs/elastic.md).

Per-segment block update
    A segment of N tokens starting after k0 tokens, of which the first n_real are real, maps
        c_after = Phi c_before + Gamma f_seg,    Phi (n_coef, n_coef), Gamma (n_coef, N)
    with K = k0 + n_real, rho = k0 / K:
        Phi[n, m]   = int_0^rho g_n(x) g_m(x / rho) dx        (old span squeezed into [0, rho])
        Gamma[n, j] = int_{(k0+j)/K}^{(k0+j+1)/K} g_n(x) dx     (j < n_real; 0 for padding)
    Phi is computed by Gauss-Legendre quadrature with n_coef nodes (exact: the integrand is a
    polynomial of degree < 2 n_coef), Gamma from int_{-1}^z P_n = (P_{n+1}(z) - P_{n-1}(z))/(2n+1).
    Both are evaluated in one vectorised pass over any batch of (k0, n_real): padded tokens at a
    sequence's end neither add input nor advance its clock, because each sequence gets the
    matrices of its own n_real (``block_matrices`` with a per-sequence ``n_real``).

Third-party imports: torch only. Everything is computed in float64 unless a dtype is given.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from astro_rmaat.errors import ConfigError

DISCRETISATIONS = ("zoh", "bilinear", "backward", "forward")
SAMPLINGS = ("uniform", "recent")
F64 = torch.float64


def _check_n_coef(n_coef) -> None:
    if isinstance(n_coef, bool) or not isinstance(n_coef, int) or n_coef < 1:
        raise ConfigError(f"n_coef = {n_coef!r}: expected an integer >= 1 (number of Legendre coefficients)")


# --------------------------------------------------------------------------- LegS system
def legs_matrices(n_coef: int, dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS (A (n_coef, n_coef), B (n_coef,)) of dc/dt = -(1/t) A c + (1/t) B f."""
    _check_n_coef(n_coef)
    q = torch.sqrt(2 * torch.arange(n_coef, dtype=F64) + 1)            # sqrt(2n+1)
    A = torch.tril(q[:, None] * q[None, :], diagonal=-1) + torch.diag(torch.arange(1, n_coef + 1, dtype=F64))
    return A.to(dtype), q.to(dtype)


def legendre(n_coef: int, z: torch.Tensor) -> torch.Tensor:
    """P_0(z) .. P_{n_coef-1}(z), shape z.shape + (n_coef,), by Bonnet's recurrence."""
    P = [torch.ones_like(z), z]
    for n in range(1, n_coef - 1):
        P.append(((2 * n + 1) * z * P[n] - n * P[n - 1]) / (n + 1))
    return torch.stack(P[:n_coef], dim=-1)


def scaled_legendre(n_coef: int, x: torch.Tensor) -> torch.Tensor:
    """g_n(x) = sqrt(2n+1) P_n(2x - 1) for x in [0, 1]: shape x.shape + (n_coef,)."""
    norm = torch.sqrt(2 * torch.arange(n_coef, dtype=x.dtype, device=x.device) + 1)
    return legendre(n_coef, 2 * x - 1) * norm


def legendre_integral(n_coef: int, y: torch.Tensor) -> torch.Tensor:
    """Q_n(y) = int_0^y g_n(x) dx for y in [0, 1]: shape y.shape + (n_coef,).

    Q_0 = y; Q_n = (P_{n+1}(z) - P_{n-1}(z)) / (2 sqrt(2n+1)) with z = 2y - 1 (n >= 1)."""
    P = legendre(n_coef + 1, 2 * y - 1)                                  # (..., n_coef+1)
    n = torch.arange(1, n_coef, dtype=y.dtype, device=y.device)
    rest = (P[..., 2:] - P[..., :-2]) / (2 * torch.sqrt(2 * n + 1))      # (..., n_coef-1)
    return torch.cat([y[..., None], rest], dim=-1)


def gauss_legendre(q: int, dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of q-point Gauss-Legendre quadrature on [-1, 1] (Golub-Welsch)."""
    k = torch.arange(1, q, dtype=F64)
    beta = k / torch.sqrt(4 * k * k - 1)
    J = torch.diag(beta, 1) + torch.diag(beta, -1)                       # Jacobi matrix (q, q)
    nodes, vecs = torch.linalg.eigh(J)
    return nodes.to(dtype), (2 * vecs[0] ** 2).to(dtype)


# --------------------------------------------------------------------------- token by token
def step_matrices(k: int, n_coef: int, method: str = "zoh") -> tuple[torch.Tensor, torch.Tensor]:
    """(M_k (n_coef, n_coef), N_k (n_coef,)) of token k >= 1: c_k = M_k c_{k-1} + N_k f_k (float64).

    zoh: exact for f constant on [k-1, k] (module doc). The generalised bilinear transform with
    step 1/k (the paper's discrete LegS): M = (I + a A/k)^{-1} (I - (1-a) A/k), N = (I + a A/k)^{-1} B/k,
    a = 0 forward Euler, 1/2 bilinear, 1 backward Euler."""
    if method not in DISCRETISATIONS:
        raise ConfigError(f"discretisation {method!r}: expected one of {', '.join(map(repr, DISCRETISATIONS))}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"token index k = {k!r}: expected an integer >= 1")
    A, B = legs_matrices(n_coef)
    I = torch.eye(n_coef, dtype=F64)
    if method == "zoh":
        E = torch.zeros_like(A) if k == 1 else torch.linalg.matrix_exp(-A * math.log(k / (k - 1)))
        A_inv_B = torch.linalg.solve_triangular(A, B[:, None], upper=False)[:, 0]
        return E, (I - E) @ A_inv_B
    a = {"forward": 0.0, "bilinear": 0.5, "backward": 1.0}[method]
    lhs = I + a * A / k
    M = torch.linalg.solve_triangular(lhs, I - (1 - a) * A / k, upper=False)
    N = torch.linalg.solve_triangular(lhs, (B / k)[:, None], upper=False)[:, 0]
    return M, N


def legs_recurrence(f: torch.Tensor, n_coef: int, method: str = "zoh", c0: torch.Tensor | None = None,
                    k0: int = 0) -> torch.Tensor:
    """Reference: run the LegS recurrence over f (..., L) token by token (a Python loop; for tests
    and benchmarks, not for training). Tokens are k0+1 .. k0+L; c0 (..., n_coef) is the state after
    k0 tokens (zeros when None). Returns c (..., n_coef) after k0 + L tokens, float64."""
    f = f.to(F64)
    c = torch.zeros(f.shape[:-1] + (n_coef,), dtype=F64) if c0 is None else c0.to(F64)
    for j in range(f.shape[-1]):
        M, N = step_matrices(k0 + j + 1, n_coef, method)
        c = c @ M.T + f[..., j, None] * N
    return c


# --------------------------------------------------------------------------- in blocks
def block_matrices(k0, n_real, N: int, n_coef: int, dtype: torch.dtype = F64,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ZOH block update of a segment of N tokens after k0 tokens, its first n_real real.

    k0, n_real: ints or integer tensors of one broadcast shape S (n_real in [0, N]). Returns
    Phi S + (n_coef, n_coef) and Gamma S + (n_coef, N) with c_after = Phi c_before + Gamma f_seg.
    Computed in float64 (closed form, module doc), then cast to dtype. n_real = 0 gives
    Phi = I (to round-off) and Gamma = 0; k0 = 0 gives Phi = 0 (nothing came before)."""
    _check_n_coef(n_coef)
    k0 = torch.as_tensor(k0, device=device).to(F64)
    n_real = torch.as_tensor(n_real, device=k0.device).to(F64)
    k0, n_real = torch.broadcast_tensors(k0, n_real)
    K = (k0 + n_real).clamp(min=1.0)                                      # tokens seen after the segment
    rho = k0 / K                                                          # S, old span's share of [0, 1]
    # Phi[n, m] = (rho/2) sum_q w_q g_n(rho (1 + xi_q) / 2) g_m((1 + xi_q) / 2)
    xi, w = gauss_legendre(n_coef)
    xi, w = xi.to(k0.device), w.to(k0.device)
    g_old = scaled_legendre(n_coef, (1 + xi) / 2)                         # (q, n_coef)
    g_new = scaled_legendre(n_coef, rho[..., None] * (1 + xi) / 2)        # S + (q, n_coef)
    Phi = torch.einsum("...qn,q,qm->...nm", g_new, w, g_old) * (rho[..., None, None] / 2)
    # Gamma[:, j] = Q((k0 + j + 1) / K) - Q((k0 + j) / K), zero for j >= n_real
    j = torch.arange(N + 1, dtype=F64, device=k0.device)
    edges = ((k0[..., None] + j) / K[..., None]).clamp(max=1.0)           # S + (N+1,)
    Q = legendre_integral(n_coef, edges)                                  # S + (N+1, n_coef)
    real = j[:N] < n_real[..., None]                                      # S + (N,)
    Gamma = ((Q[..., 1:, :] - Q[..., :-1, :]) * real[..., None]).transpose(-1, -2)
    return Phi.to(dtype), Gamma.to(dtype)


# --------------------------------------------------------------------------- reading
def reconstruct(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """History at fractions x (S,) of the span [0, t] from c (..., n_coef): (..., S)."""
    return c @ scaled_legendre(c.shape[-1], x.to(c.dtype)).T


def sample_points(sampling: str | Sequence[float], n_samples: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """Sampling fractions (n_samples,) in [0, 1], oldest first.

    uniform  midpoints of n_samples equal cells: x_s = (s + 1/2) / S
    recent   the same cells squeezed towards the present: x_s = 1 - (1 - u_s)^2, u_s = (s + 1/2) / S
             (point density grows linearly towards x = 1)
    a sequence of n_samples fractions in [0, 1], used as given."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"n_samples = {n_samples!r}: expected an integer >= 1 (memory tokens read per segment)")
    if isinstance(sampling, str):
        if sampling not in SAMPLINGS:
            raise ConfigError(f"sampling = {sampling!r}: expected {' or '.join(map(repr, SAMPLINGS))} "
                              "or a list of fractions in [0, 1]")
        u = (torch.arange(n_samples, dtype=F64) + 0.5) / n_samples
        return (u if sampling == "uniform" else 1 - (1 - u) ** 2).to(dtype)
    try:
        values = [float(v) for v in sampling]
    except (TypeError, ValueError):
        raise ConfigError(f"sampling = {sampling!r}: expected {' or '.join(map(repr, SAMPLINGS))} "
                          "or a list of fractions in [0, 1]") from None
    if len(values) != n_samples:
        raise ConfigError(f"sampling lists {len(values)} fractions but n_samples = {n_samples}: "
                          "give one fraction per memory token")
    bad = [v for v in values if not (0.0 <= v <= 1.0)]
    if bad:
        raise ConfigError(f"sampling fraction {bad[0]!r} is outside [0, 1] (fractions of the history's span)")
    return torch.tensor(values, dtype=dtype)
