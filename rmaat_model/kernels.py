"""Attention kernels of rmaat_model (the astromorphic kernel as one autograd node, and softmax)
and the dropout masks of the blocks around them.

The astromorphic attention of one head (window W, queries Wq <= W, head size hs = m):

    fq = phi(Q), fk = phi(K) * mask, v = V * mask        phi(x) = elu(x) + 1 > 0
    g  = (1^T fk)^alpha                                  (1, hs)   presynaptic term
    H  = [(fk + phi(R))^T v | m g^T]                     (hs, hs+1) H_neuron + H_astro, and m g
    Y  = fq H ;  y = Y[:, :m] / Y[:, m]                  numerator / C (the paper's 1/m cancels)

Written with autograd's elementwise ops this is about twenty graph nodes per layer and
segment, each with its own saved tensors and dispatch; at the paper's sizes (hs = 16, W =
520) that bookkeeping, not the arithmetic, dominates a training step. ``AstroAttention`` is
the same computation as one node whose backward is derived by hand:

    dnum = dy / C,  dC = -(dy . y) / C                    (per query)
    dY   = [dnum | dC]
    dfq  = dY H^T,  dH = fq^T dY = [dH_n | dc],  dg = m dc^T
    dA   = v dH_n^T,  dv = (fk + phi(R)) dH_n,  dfk = dA + alpha g / s * dg   (s = 1^T fk)
    dQ   = dfq phi'(Q),  dK = dfk phi'(K) mask,  dV = dv mask,   phi'(x) = min(phi(x), 1)

(phi' = 1 for x > 0, exp(x) = phi(x) for x <= 0.) tests/rmaat_model/test_kernels.py checks
the values against a direct O(W^2) evaluation and the gradients against autograd's.

Dropout (``dropout_masks``): every dropout site of one window (the embeddings, each block's
attention and FFN outputs) takes its mask from ONE random draw, so AMRB's replay of a
segment repeats one RNG call (rmaat_model.amrb).

Third-party imports: torch only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def phi(x: torch.Tensor) -> torch.Tensor:
    """Positive feature map of the paper: elu(x) + 1 > 0."""
    return F.elu(x) + 1.0


def astro_map(w_cap: int, m: int, scale: float) -> torch.Tensor:
    """phi(R), (w_cap, m): distance decay between window positions and m process centres."""
    pos = torch.arange(w_cap, dtype=torch.float64) / w_cap          # (W,)
    centre = (torch.arange(m, dtype=torch.float64) + 0.5) / m       # (m,)
    r = torch.exp(-(pos[:, None] - centre[None, :]).abs() * scale)  # (W, m)
    return phi(r).float()


class AstroAttention(torch.autograd.Function):
    """phi(Q) (H_neuron + H_astro) / C for all heads at once, one graph node (module doc)."""

    @staticmethod
    def forward(ctx, q, k, v, mask, phi_r, alpha: float):
        # q (B, nh, Wq, hs); k, v (B, nh, W, hs); mask (B, 1, W, 1) float or None; phi_r (W, hs) or None
        m = q.shape[-1]
        fq = F.elu(q).add_(1.0)                                     # (B, nh, Wq, hs)
        fk = F.elu(k).add_(1.0)                                     # (B, nh, W, hs)
        if mask is not None:
            fk.mul_(mask)
            v = v * mask                                            # padding -> 0 in every sum
        s = fk.sum(dim=-2, keepdim=True)                            # (B, nh, 1, hs)
        g = s.pow(alpha)
        a = fk if phi_r is None else fk + phi_r                     # (B, nh, W, hs)
        H = torch.cat([a.transpose(-2, -1) @ v, g.transpose(-2, -1) * m], dim=-1)   # (B, nh, hs, hs+1)
        Y = fq @ H                                                  # (B, nh, Wq, hs+1)
        C = Y[..., m:]                                              # (B, nh, Wq, 1)
        y = Y[..., :m].div_(C)                                      # (B, nh, Wq, hs)
        ctx.save_for_backward(fq, fk, v, mask, phi_r, s, g, H, y, C)
        ctx.alpha = alpha
        return y

    @staticmethod
    def backward(ctx, dy):
        fq, fk, v, mask, phi_r, s, g, H, y, C = ctx.saved_tensors
        m = fq.shape[-1]
        dnum = dy / C                                               # (B, nh, Wq, hs)
        dY = torch.cat([dnum, (dnum * y).sum(dim=-1, keepdim=True).neg_()], dim=-1)   # (B, nh, Wq, hs+1)
        dfq = dY @ H.transpose(-2, -1)                              # (B, nh, Wq, hs)
        dH = fq.transpose(-2, -1) @ dY                              # (B, nh, hs, hs+1)
        dHn = dH[..., :m]                                           # (B, nh, hs, hs)
        dg = dH[..., m:].transpose(-2, -1)                          # (B, nh, 1, hs), times m below
        a = fk if phi_r is None else fk + phi_r
        dfk = (v @ dHn.transpose(-2, -1)).add_(dg * (m * ctx.alpha) * g / s)   # dA + ds, (B, nh, W, hs)
        dv = a @ dHn                                                # (B, nh, W, hs)
        dq = dfq.mul_(fq.clamp(max=1.0))                            # phi'(Q)
        dk = dfk.mul_(fk.clamp(max=1.0))                            # phi'(K) (0 where masked)
        if mask is not None:
            dv.mul_(mask)
        return dq, dk, dv, None, None, None


def astro_attention(q, k, v, mask: torch.Tensor | None, phi_r: torch.Tensor | None, alpha: float):
    """Astromorphic attention, linear in W: q (B, nh, Wq, hs), k, v (B, nh, W, hs) -> (B, nh, Wq, hs).

    mask: (B, W) bool (True for real keys), or None when every key is real; phi_r: (W, m = hs)
    or None (H_astro off: with alpha = 1 this is normalised linear attention / m, RLT's kernel).
    """
    fmask = None if mask is None else mask[:, None, :, None].to(q.dtype)   # (B, 1, W, 1)
    return AstroAttention.apply(q, k, v, fmask, phi_r, float(alpha))


def softmax_attention(q, k, v, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Scaled dot-product attention; key_mask (B, W) bool or None when nothing is padded."""
    mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, W)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, W, hs)


# --------------------------------------------------------------------------- dropout
def dropout_masks(rows: tuple[int, ...], batch: int, width: int, p: float, like: torch.Tensor,
                  active: bool) -> list[torch.Tensor] | None:
    """Inverted-dropout masks (batch, rows[i], width), one per dropout site, from ONE random
    draw, or None when off. Sites: the embeddings, then each block's attention and FFN outputs.

    One draw per segment (or per whole-sequence pass) keeps the RNG calls that AMRB's replay
    must repeat to one, and only rows that are used are drawn (the last block of a memory arch
    computes M rows). The draw is 64 random bits per four mask elements: each 16-bit piece is
    kept when it is at or above a threshold, so p is rounded to a multiple of 2^-16 (0.1 ->
    0.100006) and the kept values are scaled by 1 / (1 - that p): the expectation is exact.
    (bernoulli_ costs one generator call per element, three times the time of this draw.)"""
    if not active or p == 0.0:
        return None
    n = batch * width * sum(rows)
    q = round(p * 65536)                                             # dropped 16-bit values
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device).random_(-2 ** 63, None)
    scale = 65536 / (65536 - q)
    # kept where the piece is >= q - 32768: (piece - (q - 32769)) * scale is >= scale there and
    # <= 0 elsewhere, so the clamp gives exactly {0, scale} (no bool tensor to convert)
    keep = bits.view(torch.int16)[:n].to(like.dtype).sub_(q - 32769).mul_(scale).clamp_(0.0, scale)
    return [m.view(batch, r, width) for m, r in zip(keep.split([batch * width * r for r in rows]), rows)]


def mask_rows(n_layers: int, window: int, emb_rows: int, last_queries: int | None) -> tuple[int, ...]:
    """Rows of each dropout site for ``dropout_masks``: embeddings, then two per block."""
    last = window if last_queries is None else last_queries
    return (emb_rows,) + (window,) * (2 * n_layers - 2) + (last, last)


def layer_masks(masks: list[torch.Tensor] | None, i: int) -> list[torch.Tensor] | None:
    """Block i's two masks of a ``dropout_masks`` draw (index 0: embeddings)."""
    return None if masks is None else masks[1 + 2 * i:3 + 2 * i]

