"""The post-LN encoder block with a linear-cost attention kernel as ONE autograd node.

    a  = Attn(x) (rows :Wq)           qkvT = W_qkv x^T + b (feature-major, kernels.AstroAttention)
    h1 = x[:, :Wq] + a * m1           x1 = LN1(h1)
    h2 = x1 + FFN(x1) * m2            y  = LN2(h2)          (m1, m2: dropout masks or none)

With Wq < W (a memory arch's last block) Q is projected from rows :Wq only, K and V from all.

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

``csrc/fused_block.cpp`` is this block in C++, operator for operator, with its autograd node:
``fused_block`` runs it wherever ``rmaat_model.native`` has it built and the tensors are of one
full-precision dtype, and this Python block otherwise (mixed precision, torch.compile, no
compiler). The two give the same bits (tests/rmaat_model/test_native.py): a change here is a
change there.

Third-party imports: torch only.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from rmaat_model import native
from rmaat_model.kernels import (astro_backward, astro_forward, autocast_dtype, key_mask_t, project_split_t,
                                 project_t, unproject_t)

_LN_GRADS = [True, True, True]


def block_forward(x, w_qkv, b_qkv, w_o, b_o, g1, c1, w1, bf1, w2, bf2, g2, c2,
                  mask, phi_rT, m1, m2, alpha: float, n_heads: int, n_query: int, eps: float):
    """The block's value, and the tensors its backward reads (``FusedBlock``)."""
    # x (B, W, D); w_qkv (3D, D) laid out [Q | K | V]; mask (B, 1, W) float or None;
    # phi_rT (hs, W) or None; m1, m2 (B, Wq, D) or None; returns (B, Wq, D).
    # Mixed precision (``fused_block`` under autocast): the linear layers' weights, the mask and
    # phi_rT come in the lower dtype; the products and the kernel run in it, while the residual
    # sums and LayerNorms stay in x's dtype, as autocast runs the module path.
    B, W, D = x.shape
    Wq = n_query
    mixed = w_qkv.dtype != x.dtype
    xc = x.to(w_qkv.dtype) if mixed else x
    xr = x if Wq == W else x[:, :Wq]
    if Wq == W:
        qkvT = project_t(xc, w_qkv, b_qkv)                                   # (B, 3D, W), [Q | K | V]
        qT, kvT = qkvT[:, :D], qkvT[:, D:]
    else:   # Q of the query rows only, (B, D, Wq); K and V of every row, (B, 2D, W)
        qT, kvT = project_split_t(xc, w_qkv, b_qkv, Wq)
    yT, saved = astro_forward(qT, kvT, mask, phi_rT, alpha, n_heads)         # (B, D, Wq)
    a = unproject_t(yT, w_o, b_o)                                           # (B, Wq, D)
    if m1 is not None:
        a.mul_(m1)
    h1 = xr + a if mixed else a.add_(xr)
    x1, mu1, rs1 = torch.native_layer_norm(h1, (D,), g1, c1, eps)
    x1f = x1.view(-1, D)
    x1c = x1f.to(w1.dtype) if mixed else x1f
    u = torch.addmm(bf1, x1c, w1.t())                                         # (B Wq, F)
    gu = F.gelu(u)
    f = torch.addmm(bf2, gu, w2.t())                                          # (B Wq, D)
    if m2 is not None:
        f.mul_(m2.view(-1, D))
    h2 = (x1f + f if mixed else f.add_(x1f)).view(B, Wq, D)
    y, mu2, rs2 = torch.native_layer_norm(h2, (D,), g2, c2, eps)
    return y, (xc, w_qkv, w_o, g1, c1, w1, w2, g2, c2, m1, m2,
               h1, mu1, rs1, x1c, u, gu, h2, mu2, rs2, yT, *saved)


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
    @once_differentiable   # the hand-derived backward has no derivative of its own
    def backward(ctx, dy):
        (xc, w_qkv, w_o, g1, c1, w1, w2, g2, c2, m1, m2,
         h1, mu1, rs1, x1c, u, gu, h2, mu2, rs2, yT, *saved) = ctx.saved_tensors
        B, W, D = xc.shape
        Wq = h1.shape[1]
        mixed = xc.dtype != h1.dtype                   # products in xc's dtype, the rest in x's (h1's)
        low = (lambda t: t.to(xc.dtype)) if mixed else (lambda t: t)
        dh2, dg2, dc2 = torch.ops.aten.native_layer_norm_backward(dy.contiguous(), h2, (D,), mu2, rs2, g2, c2,
                                                                  _LN_GRADS)
        dh2f = dh2.view(-1, D)
        df = dh2f if m2 is None else dh2f * m2.view(-1, D)
        dbf2, df = df.sum(0), low(df)
        dw2 = torch.mm(df.t(), gu)
        du = torch.ops.aten.gelu_backward(torch.mm(df, w2), u)
        dw1, dbf1 = torch.mm(du.t(), x1c), du.sum(0)
        dx1 = (dh2f + torch.mm(du, w1) if mixed else torch.addmm(dh2f, du, w1)).view(B, Wq, D)   # residual + FFN
        dh1, dg1, dc1 = torch.ops.aten.native_layer_norm_backward(dx1, h1, (D,), mu1, rs1, g1, c1, _LN_GRADS)
        da = dh1 if m1 is None else dh1 * m1
        db_o, da = da.sum((0, 1)), low(da)
        dw_o = torch.bmm(da.transpose(1, 2), yT.transpose(1, 2)).sum(0)     # sum_b da_b^T y_b
        dyT = torch.mm(da.view(-1, D), w_o).view(B, Wq, D).transpose(1, 2)  # (B, D, Wq) view
        # the projection's gradient as one tensor: [Q | K | V] or, Q being projected from the
        # query rows only, [K | V] (and dqT apart), (B, 3D or 2D, W)
        dqT, dpT = astro_backward(saved, dyT, ctx.alpha, q_rows=Wq == W)
        if Wq == W:
            dw_qkv, db_qkv = torch.bmm(dpT, xc).sum(0), dpT.sum((0, 2))
            dx = torch.bmm(dpT.transpose(1, 2), w_qkv.expand(B, -1, -1))   # (B, W, D)
            if mixed:
                dx = dx.to(h1.dtype)
            dx.add_(dh1)                                                    # the residual
        else:   # Q came from the query rows only
            xq = xc[:, :Wq]                                                 # (B, Wq, D)
            dw_qkv = torch.cat([torch.bmm(dqT, xq).sum(0), torch.bmm(dpT, xc).sum(0)])
            db_qkv = torch.cat([dqT.sum((0, 2)), dpT.sum((0, 2))])
            dx = torch.bmm(dpT.transpose(1, 2), w_qkv[D:].expand(B, -1, -1))   # (B, W, D)
            dxq = torch.bmm(dqT.transpose(1, 2), w_qkv[:D].expand(B, -1, -1))   # (B, Wq, D)
            if mixed:
                dx, dxq = dx.to(h1.dtype), dxq.to(h1.dtype)
            dx[:, :Wq].add_(dxq.add_(dh1))                                  # Q's rows and the residual
        return (dx, dw_qkv, db_qkv, dw_o, db_o, dg1, dc1, dw1, dbf1, dw2, dbf2, dg2, dc2,
                None, None, None, None, None, None, None, None)


def fused_block(block, x: torch.Tensor, mask: torch.Tensor | None, phi_rT: torch.Tensor | None, alpha: float,
                n_query: int, masks: list[torch.Tensor] | None) -> torch.Tensor:
    """``block`` (a post-LN ``blocks.Block`` with a linear kernel) on x (B, W, D) -> (B, n_query, D).
    mask: (B, W) bool or None; masks: the block's two dropout masks or None.

    Under ``torch.autocast`` the block runs mixed (``block_forward``): the four linear layers'
    weights and biases are cast to autocast's dtype here, where autograd casts their gradients
    back, and the block itself runs with autocast off, so its dtypes are the same on every device."""
    at, lin1, lin2 = block.attn, block.ffn[0], block.ffn[2]
    m1, m2 = (None, None) if masks is None else masks
    low = autocast_dtype(x)
    if low is None and native.usable(x, at.qkv.weight, phi_rT, m1, m2) and (ext := native.extension()) is not None:
        # the same block in C++, bitwise the same values and gradients (rmaat_model.native)
        return ext.block(x, at.qkv.weight, at.qkv.bias, at.proj.weight, at.proj.bias, block.ln1.weight,
                         block.ln1.bias, lin1.weight, lin1.bias, lin2.weight, lin2.bias, block.ln2.weight,
                         block.ln2.bias, key_mask_t(mask, x.dtype), phi_rT, m1, m2, float(alpha), at.nh, n_query,
                         block.ln1.eps)
    linear = (at.qkv.weight, at.qkv.bias, at.proj.weight, at.proj.bias)
    ffn = (lin1.weight, lin1.bias, lin2.weight, lin2.bias)
    if low is not None:
        linear, ffn = tuple(t.to(low) for t in linear), tuple(t.to(low) for t in ffn)
        phi_rT = None if phi_rT is None else phi_rT.to(low)
    args = (x, *linear, block.ln1.weight, block.ln1.bias, *ffn, block.ln2.weight, block.ln2.bias,
            key_mask_t(mask, x.dtype if low is None else low), phi_rT, m1, m2,
            float(alpha), at.nh, n_query, block.ln1.eps)
    with contextlib.nullcontext() if low is None else torch.autocast(x.device.type, enabled=False):
        if torch.is_grad_enabled():
            return FusedBlock.apply(*args)
        return block_forward(*args)[0]   # no graph wanted (AMRB's first pass, evaluation): no Function, no ctx
