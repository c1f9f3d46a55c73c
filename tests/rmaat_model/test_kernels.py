"""The astromorphic kernel as one autograd node: its hand-derived backward equals autograd's
derivative of the same formulas (written op by op) and finite differences."""

from __future__ import annotations

import pytest
import torch

from rmaat_model.kernels import AstroAttention, astro_attention, astro_map, phi

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


def test_fused_node_passes_gradcheck():
    q, k, v, mask = inputs(B=1, nh=2, W=6, Wq=6, hs=3)
    phi_r = astro_map(8, 3, 8.0).double()[:6]
    fmask = mask[:, None, :, None].double()
    assert torch.autograd.gradcheck(lambda q, k, v: AstroAttention.apply(q, k, v, fmask, phi_r, 0.25),
                                    (q, k, v), eps=1e-6, atol=1e-8)


def test_fused_node_in_float32_matches_float64_reference():
    q, k, v, mask = inputs()
    phi_r = astro_map(12, 4, 8.0)[:9]
    out = astro_attention(*(t.float().detach().requires_grad_() for t in (q, k, v)), mask, phi_r, 0.25)
    ref = composite(q, k, v, mask, phi_r.double(), 0.25)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
