"""HiPPO-LegS known answers (float64): the matrices, reconstruction, block = recurrence, timescales."""

from __future__ import annotations

import math

import pytest
import torch

from astro_rmaat.errors import ConfigError
from rmaat_model.hippo import (DISCRETISATIONS, block_matrices, gauss_legendre, legendre_integral,
                               legs_matrices, legs_recurrence, reconstruct, sample_points,
                               scaled_legendre, step_matrices)

from model_fixtures import one_thread  # noqa: F401  (autouse)

F64 = torch.float64


def midpoints(L: int) -> torch.Tensor:
    """Token k of L holds f at the midpoint of its cell [(k-1)/L, k/L] of the span."""
    return (torch.arange(L, dtype=F64) + 0.5) / L


def state(values: torch.Tensor, n_coef: int) -> torch.Tensor:
    """c after all L tokens of values (..., L), as one block (equal to the recurrence: test below)."""
    L = values.shape[-1]
    _, Gamma = block_matrices(0, L, L, n_coef)
    return values @ Gamma.T


def cubic(x):
    return 1 - 2 * x + 3 * x ** 2 - 4 * x ** 3


def test_legs_matrices_known_entries():
    """A, B of HiPPO-LegS (Gu et al. 2020, eq. for LegS): entries, eigenvalues n+1, and A e_0 = B
    (so a constant history, c = e_0 f, is a fixed point of dc/dt = (-A c + B f) / t)."""
    A, B = legs_matrices(3)
    s3, s5 = math.sqrt(3), math.sqrt(5)
    assert torch.allclose(A, torch.tensor([[1, 0, 0], [s3, 2, 0], [s5, s3 * s5, 3]], dtype=F64))
    assert torch.allclose(B, torch.tensor([1, s3, s5], dtype=F64))
    A, B = legs_matrices(16)
    assert torch.allclose(torch.linalg.eigvals(A).real.sort().values, torch.arange(1, 17, dtype=F64))
    assert torch.allclose(A[:, 0], B)


def test_basis_orthonormal_and_integrals_exact():
    """g_n are orthonormal on [0, 1] (Gauss-Legendre with q nodes is exact to degree 2q-1), and
    the closed-form Q_n(y) = int_0^y g_n equals quadrature on [0, y]."""
    xi, w = gauss_legendre(12)
    g = scaled_legendre(10, (1 + xi) / 2)                                # (12, 10)
    assert torch.allclose(g.T @ torch.diag(w / 2) @ g, torch.eye(10, dtype=F64), atol=1e-13)
    for y in (0.0, 0.3, 0.77, 1.0):
        quad = (w * y / 2) @ scaled_legendre(10, y * (1 + xi) / 2)
        assert torch.allclose(legendre_integral(10, torch.tensor(y, dtype=F64)), quad, atol=1e-14)


@pytest.mark.parametrize("n_coef", [4, 8])
def test_polynomial_reconstruction_error_falls_like_one_over_L_squared(n_coef):
    """A cubic (degree < n_coef) sampled at the L cell midpoints is reconstructed on [0, 1] with
    the midpoint rule's error: ZOH holds the exact projection of the step function, whose
    difference from the cubic projects to O(1/L^2). Tolerance 50 / L^2 (measured: 10.6 / L^2 at
    n_coef 4, 43.2 / L^2 at 8), and each 4x more tokens cut the error ~16x."""
    x = torch.linspace(0, 1, 201, dtype=F64)
    errs = []
    for L in (64, 256, 1024, 4096):
        err = float((reconstruct(state(cubic(midpoints(L)), n_coef), x) - cubic(x)).abs().max())
        assert err <= 50 / L ** 2, (L, err)
        errs.append(err)
    ratios = [a / b for a, b in zip(errs, errs[1:])]
    assert all(15 < r < 17 for r in ratios), ratios


def test_degree_n_minus_one_polynomial_through_the_token_recurrence():
    """The same known answer through the token-by-token ZOH recurrence (matrix exponentials of A),
    for a random polynomial of the highest representable degree n_coef - 1 = 7."""
    coef = torch.randn(8, dtype=F64, generator=torch.Generator().manual_seed(0))
    poly = lambda x: sum(coef[i] * x ** i for i in range(8))             # noqa: E731
    L = 128
    c = legs_recurrence(poly(midpoints(L)), 8)
    x = torch.linspace(0, 1, 101, dtype=F64)
    err = float((reconstruct(c, x) - poly(x)).abs().max())
    assert err <= 50 / L ** 2                                            # measured 32.4 / L^2


def test_block_update_equals_token_recurrence():
    """Chaining the closed-form block matrices (quadrature + Legendre integrals) over segments --
    from a random state after k0 tokens, the last segment only 5 of 16 tokens real -- gives the
    token-by-token recurrence of matrix exponentials to round-off: the ZOH recurrence of the
    LegS ODE *is* the exact projection the closed form computes."""
    g = torch.Generator().manual_seed(1)
    n, N, k0 = 12, 16, 7
    c0 = torch.randn(3, n, dtype=F64, generator=g)
    f = torch.randn(3, 3 * N, dtype=F64, generator=g)                   # 3 features, 3 segments
    lengths = [N, N, 5]
    c = c0
    for s, n_real in enumerate(lengths):
        Phi, Gamma = block_matrices(k0 + s * N, n_real, N, n)
        c = c @ Phi.T + f[:, s * N:(s + 1) * N] @ Gamma.T
    real = f[:, :2 * N + 5]
    ref = legs_recurrence(real, n, c0=c0, k0=k0)
    assert torch.allclose(c, ref, rtol=0, atol=1e-12), (c - ref).abs().max()
    # n_real = 0: nothing happens; k0 = 0: the state before is irrelevant (Phi = 0)
    Phi, Gamma = block_matrices(40, 0, N, n)
    assert torch.allclose(Phi, torch.eye(n, dtype=F64), atol=1e-13) and not Gamma.any()
    assert not block_matrices(0, N, N, n)[0].any()


def test_block_matrices_batch_over_segments_and_lengths():
    """One vectorised call over (k0, n_real) pairs equals the calls one by one."""
    k0 = torch.tensor([0, 16, 32, 48])
    n_real = torch.tensor([16, 3, 0, 9])
    Phi, Gamma = block_matrices(k0, n_real, 16, 6)
    for i in range(4):
        P1, G1 = block_matrices(int(k0[i]), int(n_real[i]), 16, 6)
        assert torch.allclose(Phi[i], P1, rtol=0, atol=1e-15) and torch.allclose(Gamma[i], G1, rtol=0, atol=1e-15)


def test_sample_and_hold_at_a_higher_rate_gives_the_same_state():
    """Timescale robustness, exact form: a sequence and the same sequence with every sample held
    for 3 tokens describe the same step function on [0, 1], so ZOH gives the same coefficients
    to round-off. The paper's forward Euler does not (error > 1e-3): its result depends on the
    step count."""
    f = torch.randn(2, 40, dtype=F64, generator=torch.Generator().manual_seed(2))
    slow = f.repeat_interleave(3, dim=-1)                                # (2, 120)
    zoh = legs_recurrence(f, 8), legs_recurrence(slow, 8)
    assert torch.allclose(*zoh, rtol=0, atol=1e-12)
    euler = legs_recurrence(f, 8, "forward"), legs_recurrence(slow, 8, "forward")
    assert (euler[0] - euler[1]).abs().max() > 1e-3


def test_state_of_one_signal_sampled_at_two_rates_agrees():
    """Timescale robustness (HiPPO: coefficients of f(alpha t) at alpha t equal those of f at t):
    sin(2 pi x) + x sampled at L and 3L tokens over the same span gives states that differ by the
    two midpoint-rule errors, < 5 / L^2 (measured 4.2 / L^2 at n_coef 8)."""
    signal = lambda x: torch.sin(2 * math.pi * x) + x                    # noqa: E731
    for L in (100, 300):
        d = float((state(signal(midpoints(L)), 8) - state(signal(midpoints(3 * L)), 8)).abs().max())
        assert d < 5 / L ** 2, (L, d)


def test_non_polynomial_error_falls_with_n_coef():
    """L2 reconstruction error on [0, 1] of signals that no polynomial represents, 8192 tokens:
    - the analytic Runge function 1 / (1 + 25 (2x-1)^2): falls geometrically with n_coef;
    - a jump at x = 1/2: Legendre coefficients |c_n| ~ 1 / (sqrt(pi) n) (odd n), so the truncation
      error is (2 pi n_coef)^(-1/2) to leading order -- within 3 % at n_coef 16 and 32."""
    x = midpoints(2000)
    runge = lambda x: 1 / (1 + 25 * (2 * x - 1) ** 2)                    # noqa: E731
    jump = lambda x: (x > 0.5).to(F64)                                   # noqa: E731

    def l2(fn, n):
        return float(((reconstruct(state(fn(midpoints(8192)), n), x) - fn(x)) ** 2).mean().sqrt())

    err = [l2(runge, n) for n in (4, 8, 16, 32)]
    assert all(a > b for a, b in zip(err, err[1:])), err
    assert err[-1] < 1e-2 * err[0], err                                  # measured 0.193 -> 7.4e-4
    for n in (16, 32):
        assert l2(jump, n) == pytest.approx((2 * math.pi * n) ** -0.5, rel=0.03)


def test_discretisations_converge_to_the_same_state():
    """The four discretisations are of one ODE: with many tokens their states agree (the
    first-order ones to O(1/L)); a mistyped method is an error."""
    f = torch.sin(3 * midpoints(400))
    ref = legs_recurrence(f, 4, "zoh")
    for method in DISCRETISATIONS:
        assert (legs_recurrence(f, 4, method) - ref).abs().max() < 2e-2, method
    with pytest.raises(ConfigError, match="discretisation 'euler'"):
        step_matrices(1, 4, "euler")


def test_sample_points_and_bad_values():
    assert torch.allclose(sample_points("uniform", 4), torch.tensor([0.125, 0.375, 0.625, 0.875], dtype=F64))
    recent = sample_points("recent", 4)
    assert torch.allclose(recent, 1 - (1 - sample_points("uniform", 4)) ** 2)
    gaps = recent.diff()
    assert (gaps[1:] < gaps[:-1]).all() and recent[-1] > 0.98           # denser towards the present
    assert sample_points([0, 0.5, 1], 3).tolist() == [0.0, 0.5, 1.0]
    for bad, msg in [(("middle", 3), "sampling = 'middle'"), (([0.2, 1.5], 2), "fraction 1.5 is outside"),
                     (([-0.1, 0.5], 2), "fraction -0.1 is outside"), (([0.5], 2), "lists 1 fractions"),
                     (("uniform", 0), "n_samples = 0")]:
        with pytest.raises(ConfigError, match=msg):
            sample_points(*bad)
    with pytest.raises(ConfigError, match="n_coef = 0"):
        legs_matrices(0)
