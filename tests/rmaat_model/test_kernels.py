"""The astromorphic kernel as one autograd node: its hand-derived backward equals autograd's
derivative of the same formulas (written op by op) and finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rmaat_model.kernels import AstroAttention, astro_attention, astro_attention_t, astro_map, phi, phi_kernel

from model_fixtures import one_thread  # noqa: F401  (autouse)


def composite(q, k, v, mask, phi_r, alpha):
    """The kernel in autograd's elementwise ops: the reference the fused node must match."""
    m = q.shape[-1]
    fmask = torch.ones_like(k[..., :1]) if mask is None else mask[:, None, :, None].to(q.dtype)
    fq, fk, v = phi(q), phi(k) * fmask, v * fmask
    g = fk.sum(dim=-2, keepdim=True) ** alpha                        # (B, nh, 1, hs)
    a = fk if phi_r is None else fk + phi_r
    num = fq @ (a.transpose(-2, -1) @ v)                             # (B, nh, Wq, hs)
    return num / (fq @ (g.transpose(-2, -1) * m))


def inputs(B=2, nh=3, W=9, Wq=9, hs=4, padded=True, dtype=torch.float64, seed=3):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, nh, Wq, hs, generator=g, dtype=dtype) * 1.5).requires_grad_()
    k = (torch.randn(B, nh, W, hs, generator=g, dtype=dtype) * 1.5).requires_grad_()
    v = torch.randn(B, nh, W, hs, generator=g, dtype=dtype).requires_grad_()
    mask = None
    if padded:
        mask = torch.ones(B, W, dtype=torch.bool)
        mask[-1, W - 3:] = False
    return q, k, v, mask


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "all-real"])
@pytest.mark.parametrize("astro", [True, False], ids=["H_astro", "linear"])
@pytest.mark.parametrize("Wq", [9, 4], ids=["all-queries", "memory-rows"])
def test_fused_node_equals_autograd_of_the_formulas(padded, astro, Wq):
    q, k, v, mask = inputs(Wq=Wq, padded=padded)
    phi_r = astro_map(12, 4, 8.0).double()[:9] if astro else None
    alpha = 0.25 if astro else 1.0
    out = astro_attention(q, k, v, mask, phi_r, alpha)
    ref = composite(q, k, v, mask, phi_r, alpha)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(out)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    refs = torch.autograd.grad((ref * w).sum(), (q, k, v))
    for name, a, b in zip("qkv", grads, refs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"d{name}")
    if padded:   # padded keys get no gradient at all
        assert grads[1][-1, :, -3:].abs().max() == 0 and grads[2][-1, :, -3:].abs().max() == 0


@pytest.mark.parametrize("Wq", [6, 2], ids=["all-queries", "memory-rows"])
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "all-real"])
def test_fused_node_passes_gradcheck(Wq, padded):
    """The node's own interface: packed, feature-major qkvT (B, 3 * nh * hs, W) -> (B, nh * hs, Wq)."""
    _, _, _, mask = inputs(B=2, W=6, padded=padded)
    phi_rT = astro_map(8, 3, 8.0).double()[:6].T
    fmask = None if mask is None else mask[:, None, :].double()
    qkvT = torch.randn(2, 18, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: AstroAttention.apply(x, None, fmask, phi_rT, 0.25, 2, Wq),
                                    (qkvT,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "all-real"])
def test_split_node_passes_gradcheck_and_equals_the_packed_one(padded):
    """Q projected from the query rows only: qT (B, nh * hs, Wq) and kvT (B, 2 * nh * hs, W) as two
    inputs give the packed node's values and gradients to round-off (a strided Q slice and a
    contiguous one can round its exponential differently)."""
    _, _, _, mask = inputs(B=2, W=6, padded=padded)
    phi_rT = astro_map(8, 3, 8.0).double()[:6].T
    fmask = None if mask is None else mask[:, None, :].double()
    qkvT = torch.randn(2, 18, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    qT, kvT = qkvT[:, :6, :2].clone().requires_grad_(), qkvT[:, 6:].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda q, kv: AstroAttention.apply(q, kv, fmask, phi_rT, 0.25, 2, 2),
                                    (qT, kvT), eps=1e-6, atol=1e-8)
    packed = qkvT.clone().requires_grad_()
    y = AstroAttention.apply(packed, None, fmask, phi_rT, 0.25, 2, 2)
    y2 = AstroAttention.apply(qT, kvT, fmask, phi_rT, 0.25, 2, 2)
    torch.testing.assert_close(y2, y, rtol=1e-14, atol=1e-15)
    w = torch.randn_like(y)
    (dpacked,) = torch.autograd.grad((y * w).sum(), packed)
    dq, dkv = torch.autograd.grad((y2 * w).sum(), (qT, kvT))
    torch.testing.assert_close(dq, dpacked[:, :6, :2], rtol=1e-13, atol=1e-14)
    assert dpacked[:, :6, 2:].abs().max() == 0                     # rows that are keys only
    torch.testing.assert_close(dkv, dpacked[:, 6:], rtol=1e-13, atol=1e-14)


def test_feature_major_layout_is_the_projections_q_k_v_rows():
    """qkvT row j * D + h * hs + e is feature e of head h's Q (j = 0), K (1) or V (2) -- the
    row order of the linear layer's [Q | K | V] output, so no reordering is needed -- and yT
    row h * hs + e is head h's output feature e."""
    B, W, Wq, nh, hs = 2, 7, 3, 2, 4
    proj = torch.randn(B, W, 3 * nh * hs, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(B, W, dtype=torch.bool)
    mask[0, 5:] = False
    phi_r = astro_map(9, hs, 8.0).double()[:W]
    yT = astro_attention_t(proj.transpose(1, 2), nh, mask, phi_r.T, 0.25, Wq)
    q, k, v = proj.view(B, W, 3, nh, hs).permute(2, 0, 3, 1, 4)                  # (B, nh, W, hs)
    ref = composite(q[:, :, :Wq], k, v, mask, phi_r, 0.25)                       # (B, nh, Wq, hs)
    torch.testing.assert_close(yT, ref.transpose(-2, -1).reshape(B, nh * hs, Wq), rtol=1e-12, atol=1e-12)


def test_fused_node_in_float32_matches_float64_reference():
    q, k, v, mask = inputs()
    phi_r = astro_map(12, 4, 8.0)[:9]
    out = astro_attention(*(t.float().detach().requires_grad_() for t in (q, k, v)), mask, phi_r, 0.25)
    ref = composite(q, k, v, mask, phi_r.double(), 0.25)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


def test_a_second_derivative_is_refused_not_silently_wrong():
    """The hand-derived backward has no derivative of its own: differentiating it again
    (create_graph) raises, where autograd would otherwise return a wrong second derivative
    (torch.autograd.gradgradcheck fails on the kernel without the guard)."""
    phi_rT = astro_map(8, 3, 8.0).double()[:6].T
    qkvT = torch.randn(2, 18, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).requires_grad_()
    y = AstroAttention.apply(qkvT, None, None, phi_rT, 0.25, 2, 6)
    (g,) = torch.autograd.grad(y.square().sum(), qkvT, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.square().sum().backward()


@pytest.mark.parametrize("fn", [phi, phi_kernel], ids=["phi", "phi_kernel"])
def test_phi_keeps_float32_precision_where_elu_plus_one_cancels(fn):
    """phi = elu + 1 (the paper's map), checked against float64. Written as elu(x) + 1, float32
    loses the small values of x << 0 to cancellation (1e-4 relative at x = -8, exactly 0 below
    about -17, where a query's normaliser C can vanish); exp(min(x, 0)) + max(x, 0) keeps them."""
    x = torch.linspace(-40.0, 10.0, 2001)
    xd = x.double()
    ref = torch.where(xd > 0, xd + 1.0, xd.exp())           # elu(x) + 1 without the cancellation
    out = fn(x)
    assert out.dtype == torch.float32 and bool((out > 0).all())
    torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=0.0)
    torch.testing.assert_close(fn(xd), ref, rtol=1e-11, atol=0.0)


def test_phi_has_elus_derivative():
    x = torch.tensor([-30.0, -3.0, -0.5, 0.0, 0.5, 4.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(phi(x).sum(), x)
    torch.testing.assert_close(g, torch.where(x > 0, 1.0, x.detach().exp()).to(g.dtype), rtol=1e-12, atol=0.0)
    assert torch.autograd.gradcheck(phi, (torch.linspace(-3, 3, 13, dtype=torch.float64).add(0.01).requires_grad_(),))


def test_bfloat16_kernel_stays_finite_for_far_negative_queries():
    """In bfloat16, elu(x) + 1 rounds to 0 from x = -8 on: a query whose Q features all lie there
    had C = 0 and returned NaN. phi's form keeps every feature positive."""
    B, nh, hs, W = 2, 2, 4, 6
    qkvT = torch.randn(B, 3 * nh * hs, W, generator=torch.Generator().manual_seed(7))
    qkvT[:, :nh * hs, 0] = -10.0
    qkvT = qkvT.bfloat16()
    y = astro_attention_t(qkvT, nh, None, astro_map(W, hs, 8.0).T.contiguous(), 0.5)
    assert bool(torch.isfinite(y).all())
    assert bool((phi_kernel(torch.full((3,), -60.0, dtype=torch.bfloat16)) > 0).all())
