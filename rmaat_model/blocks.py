"""The encoder block of every arch in rmaat_model.model, and its attention layer.

``Attention`` projects a window, runs one of the kernels of ``rmaat_model.kernels`` (the
astromorphic kernel for RMAAT and AT, normalised linear attention for RLT, softmax for RMT,
Elastic Memory and the Transformer) and projects back; ``Block`` puts it and the FFN
together in the layout ``ModelConfig.norm`` names. A post-LN block with a linear kernel runs
as one autograd node (``rmaat_model.fused_block``) with the same values; pre-LN blocks, the
softmax kernel and the tests' reference take the module path written out here.

Third-party imports: torch only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rmaat_model.fused_block import fused_block
from rmaat_model.kernels import (astro_attention_t, astro_map, project_split_t, project_t, softmax_attention,
                                 unproject_t)
from rmaat_model.model_config import ModelConfig


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, w_cap: int):
        super().__init__()
        self.nh, self.hs, self.kernel, self.alpha = cfg.n_heads, cfg.head_size, cfg.kernel, cfg.alpha
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        if self.kernel == "astro":  # geometry from config: rebuilt, not stored; transposed, (hs, w_cap)
            self.register_buffer("phi_rT", astro_map(w_cap, self.hs, cfg.astro_scale).T.contiguous(),
                                 persistent=False)
        else:
            self.phi_rT = None

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, all_real: bool,
                n_query: int | None = None) -> torch.Tensor:
        """x (B, W, D) -> (B, Wq, D): every row is a key; only the first n_query rows (all when
        None) are queries. all_real: no key is padding (the mask is skipped)."""
        B, W, D = x.shape
        Wq = W if n_query is None else n_query
        mask = None if all_real else key_mask
        if self.kernel == "softmax":
            if Wq == W:
                q, k, v = self.qkv(x).view(B, W, 3, self.nh, self.hs).permute(2, 0, 3, 1, 4)   # (B, nh, W, hs)
            else:   # Q of the query rows only, K and V of every row
                w, b = self.qkv.weight, self.qkv.bias
                q = F.linear(x[:, :Wq], w[:D], b[:D]).view(B, Wq, self.nh, self.hs).transpose(1, 2)
                k, v = F.linear(x, w[D:], b[D:]).view(B, W, 2, self.nh, self.hs).permute(2, 0, 3, 1, 4)
            y = softmax_attention(q, k, v, mask)
            return self.proj(y.transpose(1, 2).reshape(B, Wq, D))
        # astromorphic (rmaat, at) or plain normalised linear (rlt: alpha = 1, no H_astro), one
        # node, feature-major: the projection is computed transposed, x^T -> (B, 3D, W) with its rows
        # in the linear layer's [Q | K | V] order, and the output projection reads y^T as it comes, so the
        # heads are never permuted in memory (a copy that cost as much as the projection itself)
        w, b, args = self.qkv.weight, self.qkv.bias, self.kernel_args(W, x.dtype)
        if Wq == W:
            yT = astro_attention_t(project_t(x, w, b), self.nh, mask, *args)                # (B, D, W)
        else:   # Q of the query rows only, (B, D, Wq); K and V of every row, (B, 2D, W)
            qT, kvT = project_split_t(x, w, b, Wq)
            yT = astro_attention_t(qT, self.nh, mask, *args, kvT=kvT)                      # (B, D, Wq)
        return unproject_t(yT, self.proj.weight, self.proj.bias)                       # (B, Wq, D)

    def kernel_args(self, W: int, dtype: torch.dtype) -> tuple[torch.Tensor | None, float]:
        """(phi_rT, alpha) of a linear kernel over a window of W rows: phi(R) of the window's rows,
        transposed (hs, W) (the whole buffer for a memory arch's full window), or None and
        alpha = 1 for RLT's."""
        if self.kernel != "astro":
            return None, 1.0
        phi_rT = self.phi_rT if W == self.phi_rT.shape[1] else self.phi_rT[:, :W]
        return (phi_rT if phi_rT.dtype == dtype else phi_rT.to(dtype)), self.alpha


def runs_fused(cfg: ModelConfig) -> bool:
    """Whether ``cfg``'s blocks run as one autograd node (rmaat_model.fused_block): post-LN with
    a linear kernel."""
    return cfg.norm == "post" and cfg.kernel != "softmax"


class Block(nn.Module):
    """Encoder block. post (default): Y = LN(X + Attn X), LN(Y + FFN Y), the layout of the
    astromorphic-transformer papers; pre: X + Attn(LN X), then X + FFN(LN X) (nanoGPT)."""

    def __init__(self, cfg: ModelConfig, w_cap: int):
        super().__init__()
        self.post = cfg.norm == "post"
        # post-LN with a linear kernel runs as one autograd node (rmaat_model.fused_block), same values
        self.fused = runs_fused(cfg)
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg, w_cap)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ffn = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))

    def forward(self, x, key_mask, all_real, n_query=None, masks=None):
        """masks: the dropout masks (B, Wq, D) of the attention and FFN outputs, or None."""
        if self.fused:
            W = x.shape[1]
            return fused_block(self, x, None if all_real else key_mask, *self.attn.kernel_args(W, x.dtype),
                               W if n_query is None else n_query, masks)
        a = self.attn(x if self.post else self.ln1(x), key_mask, all_real, n_query)
        r = x if n_query is None else x[:, :n_query]
        if masks is not None:
            a = a * masks[0]
        x = self.ln1(r + a) if self.post else r + a
        f = self.ffn(x if self.post else self.ln2(x))
        if masks is not None:
            f = f * masks[1]
        return self.ln2(x + f) if self.post else x + f
