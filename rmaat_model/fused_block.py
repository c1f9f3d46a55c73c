"""The post-LN encoder block with a linear-cost attention kernel as ONE autograd node.

    a  = Attn(x) (rows :Wq)           qkvT = W_qkv x^T + b (feature-major, kernels.AstroAttention)
    h1 = x[:, :Wq] + a * m1           x1 = LN1(h1)
    h2 = x1 + FFN(x1) * m2            y  = LN2(h2)          (m1, m2: dropout masks or none)

``blocks.Block`` runs this for RMAAT, RLT and AT (post-LN, astromorphic or normalised linear
kernel); pre-LN blocks and the softmax kernel run the module path. The value is the module
path's; the backward is written out (LayerNorm and GELU through their ATen backward
kernels, each linear layer as two matrix products), so a block costs one graph node instead
of about thirty, each with its own dispatch, views and saved-tensor bookkeeping -- the
overhead that made an eager AMRB step issue 1.86x RMT's operator calls. With grad mode off
(AMRB's no-grad pass, evaluation) ``block_forward`` runs directly, without the Function's
context: 4 % of that pass at the amrb_memory bench's sizes.
tests/rmaat_model/test_fused_block.py checks values and every gradient against the module
path, with and without dropout masks and padding, for full windows and memory-row queries.

Third-party imports: torch only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rmaat_model.kernels import astro_backward, astro_forward, key_mask_t, project_t, unproject_t

_LN_GRADS = [True, True, True]


def block_forward(x, w_qkv, b_qkv, w_o, b_o, g1, c1, w1, bf1, w2, bf2, g2, c2,
                  mask, phi_rT, m1, m2, alpha: float, n_heads: int, n_query: int, eps: float):
    """The block's value, and the tensors its backward reads (``FusedBlock``)."""
    # x (B, W, D); w_qkv (3D, D) laid out [Q | K | V]; mask (B, 1, W) float or None;
    # phi_rT (hs, W) or None; m1, m2 (B, Wq, D) or None; returns (B, Wq, D)
    B, W, D = x.shape
    Wq = n_query
    qkvT = project_t(x, w_qkv, b_qkv)                                        # (B, 3D, W), [Q | K | V]
    yT, saved = astro_forward(qkvT, mask, phi_rT, alpha, n_heads, Wq)        # (B, D, Wq)
    a = unproject_t(yT, w_o, b_o)                                           # (B, Wq, D)
    if m1 is not None:
        a.mul_(m1)
    h1 = a.add_(x if Wq == W else x[:, :Wq])
    x1, mu1, rs1 = torch.native_layer_norm(h1, (D,), g1, c1, eps)
    x1f = x1.view(-1, D)
    u = torch.addmm(bf1, x1f, w1.t())                                         # (B Wq, F)
    gu = F.gelu(u)
    f = torch.addmm(bf2, gu, w2.t())                                          # (B Wq, D)
    if m2 is not None:
        f.mul_(m2.view(-1, D))
    h2 = f.add_(x1f).view(B, Wq, D)
    y, mu2, rs2 = torch.native_layer_norm(h2, (D,), g2, c2, eps)
    return y, (x, w_qkv, w_o, g1, c1, w1, w2, g2, c2, m1, m2,
               h1, mu1, rs1, x1, u, gu, h2, mu2, rs2, yT, *saved)


class FusedBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_qkv, b_qkv, w_o, b_o, g1, c1, w1, bf1, w2, bf2, g2, c2,
                mask, phi_rT, m1, m2, alpha: float, n_heads: int, n_query: int, eps: float):
        y, saved = block_forward(x, w_qkv, b_qkv, w_o, b_o, g1, c1, w1, bf1, w2, bf2, g2, c2,
                                 mask, phi_rT, m1, m2, alpha, n_heads, n_query, eps)
        ctx.save_for_backward(*saved)
        ctx.alpha, ctx.eps = alpha, eps
        return y

    @staticmethod
    def backward(ctx, dy):
        (x, w_qkv, w_o, g1, c1, w1, w2, g2, c2, m1, m2,
         h1, mu1, rs1, x1, u, gu, h2, mu2, rs2, yT, *saved) = ctx.saved_tensors
        B, W, D = x.shape
        Wq = h1.shape[1]
        dh2, dg2, dc2 = torch.ops.aten.native_layer_norm_backward(dy.contiguous(), h2, (D,), mu2, rs2, g2, c2,
                                                                  _LN_GRADS)
        dh2f = dh2.view(-1, D)
        df = dh2f if m2 is None else dh2f * m2.view(-1, D)
        dw2, dbf2 = torch.mm(df.t(), gu), df.sum(0)
        du = torch.ops.aten.gelu_backward(torch.mm(df, w2), u)
        dw1, dbf1 = torch.mm(du.t(), x1.view(-1, D)), du.sum(0)
        dx1 = torch.addmm(dh2f, du, w1).view(B, Wq, D)                      # residual + FFN input
        dh1, dg1, dc1 = torch.ops.aten.native_layer_norm_backward(dx1, h1, (D,), mu1, rs1, g1, c1, _LN_GRADS)
        da = dh1 if m1 is None else dh1 * m1
        dw_o = torch.bmm(da.transpose(1, 2), yT.transpose(1, 2)).sum(0)     # sum_b da_b^T y_b
        db_o = da.sum((0, 1))
        dyT = torch.mm(da.view(-1, D), w_o).view(B, Wq, D).transpose(1, 2)  # (B, D, Wq) view
        dqkvT = astro_backward(saved, dyT, ctx.alpha, W)                    # (B, 3D, W)
        dw_qkv, db_qkv = torch.bmm(dqkvT, x).sum(0), dqkvT.sum((0, 2))
        dx = torch.bmm(dqkvT.transpose(1, 2), w_qkv.expand(B, -1, -1))      # (B, W, D)
        (dx if Wq == W else dx[:, :Wq]).add_(dh1)                           # the residual
        return (dx, dw_qkv, db_qkv, dw_o, db_o, dg1, dc1, dw1, dbf1, dw2, dbf2, dg2, dc2,
                None, None, None, None, None, None, None, None)


def fused_block(block, x: torch.Tensor, mask: torch.Tensor | None, phi_rT: torch.Tensor | None, alpha: float,
                n_query: int, masks: list[torch.Tensor] | None) -> torch.Tensor:
    """``block`` (a post-LN ``blocks.Block`` with a linear kernel) on x (B, W, D) -> (B, n_query, D).
    mask: (B, W) bool or None; masks: the block's two dropout masks or None."""
    at, lin1, lin2 = block.attn, block.ffn[0], block.ffn[2]
    m1, m2 = (None, None) if masks is None else masks
    args = (x, at.qkv.weight, at.qkv.bias, at.proj.weight, at.proj.bias,
            block.ln1.weight, block.ln1.bias, lin1.weight, lin1.bias, lin2.weight, lin2.bias,
            block.ln2.weight, block.ln2.bias, key_mask_t(mask, x.dtype), phi_rT, m1, m2,
            float(alpha), at.nh, n_query, block.ln1.eps)
    if torch.is_grad_enabled():
        return FusedBlock.apply(*args)
    return block_forward(*args)[0]   # no graph wanted (AMRB's first pass, evaluation): no Function, no ctx
