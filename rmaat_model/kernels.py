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

phi is evaluated as exp(min(x, 0)) + max(x, 0), the same function: elu(x) + 1 in float32 cancels
for negative x (relative error 1e-4 at x = -8 against float64, under 1e-6 this way), and it costs
twice as much. The exponential is exp2 of x log2(e): on a CPU torch.exp2 runs about 4x
torch.exp (70 000 float32 values: 11 against 46 us, one thread, AMD EPYC with AVX-512).

Dropout (``dropout_masks``): every dropout site of one window (the embeddings, each block's
attention and FFN outputs) takes its mask from ONE random draw, so AMRB's replay of a
segment repeats one RNG call (rmaat_model.amrb). The draw is from the default generator, or
from the one ``drawing_from`` sets for the calling thread (batch shards, rmaat_model.shards:
one generator per shard, so that shards on their own threads draw in a fixed order).

Third-party imports: torch only.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from rmaat_model import native


_SCALARS: dict = {}
FULL_PRECISION = (torch.float32, torch.float64)   # dtypes that hold the kernels' constants as given


def scalar(value: float, dtype: torch.dtype) -> torch.Tensor | float:
    """A cached 0-dim tensor of ``dtype``: an elementwise op with a Python number converts it to
    a tensor on every call (four dispatched operators); with this it is one. 0-dim CPU tensors
    combine with tensors on any device.

    The number itself where a tensor would be wrong: in a reduced-precision dtype (a bfloat16
    0-dim tensor would round alpha = 0.3 to 0.3008, and the backward's m * alpha differently;
    ops take a Python number at full precision), and while ``torch.compile`` traces (a tensor
    created there is cached after the graph runs, so under AMRB's inference-mode pass it would
    be an inference tensor, which a later graph cannot save for backward)."""
    if dtype not in FULL_PRECISION or torch.compiler.is_compiling():
        return value
    key = (value, dtype)
    t = _SCALARS.get(key)
    if t is None:
        with torch.inference_mode(False):   # an ordinary tensor, even when first asked for in inference mode
            t = _SCALARS[key] = torch.tensor(value, dtype=dtype)
    return t


LOG2E = math.log2(math.e)


def phi(x: torch.Tensor) -> torch.Tensor:
    """Positive feature map of the paper, elu(x) + 1 > 0, evaluated as x + 1 for x > 0 and exp(x)
    for x <= 0 (module doc). Differentiable; ``phi_kernel`` is the kernels' faster form."""
    return torch.exp2(torch.clamp_max(x, 0.0) * LOG2E) + F.relu(x)


def phi_kernel(x: torch.Tensor) -> torch.Tensor:
    """``phi`` into a fresh tensor with in-place steps (no autograd graph: for the hand-derived
    kernels). exp(min(x, 0)) + max(x, 0), the exponential taken as exp2 of x log2(e)."""
    y = torch.clamp_max(x, 0.0).mul_(scalar(LOG2E, x.dtype)).exp2_()
    return y.add_(torch.clamp_min(x, 0.0))   # relu's value, one dispatched operator where relu is two


def astro_map(w_cap: int, m: int, scale: float) -> torch.Tensor:
    """phi(R), (w_cap, m): distance decay between window positions and m process centres."""
    pos = torch.arange(w_cap, dtype=torch.float64) / w_cap          # (W,)
    centre = (torch.arange(m, dtype=torch.float64) + 0.5) / m       # (m,)
    r = torch.exp(-(pos[:, None] - centre[None, :]).abs() * scale)  # (W, m)
    return phi(r).float()


def astro_forward(qT, kvT, mask, phi_rT, alpha: float, n_heads: int):
    """Forward of ``AstroAttention``: returns yT (B, nh * hs, Wq) and what its backward needs."""
    # qT (B, D, Wq): the queries' Q rows; kvT (B, 2D, W): K and V, [K | V] as the projection lays
    # them out; each a row-major tensor or row slices of one (a projection's output and its
    # [:, :D] / [:, D:] parts are). mask (B, 1, W) float or None; phi_rT (hs, W) or None. Heads
    # are folded into the batch, (B nh, hs, .), for torch.bmm: phi and the masking write fresh
    # contiguous (B, D, .) tensors, where a head's rows are adjacent.
    B, D, Wq = qT.shape
    W = kvT.shape[-1]
    nh = n_heads
    m, BH = D // nh, B * nh
    one = scalar(1.0, qT.dtype)
    fqT = phi_kernel(qT).view(BH, m, Wq)                                     # phi(Q)^T
    fkT = phi_kernel(kvT[:, :D])                                             # phi(K)^T, (B, D, W)
    if mask is not None:                                                     # padding -> 0 in every sum
        fkT.mul_(mask)
    fkT = fkT.view(BH, m, W)
    vT = (kvT[:, D:] * (one if mask is None else mask)).view(BH, m, W)       # a fresh copy
    s = fkT.sum(dim=-1, keepdim=True)                                        # (B nh, hs, 1)
    g = s.pow(scalar(alpha, s.dtype))
    aT = fkT if phi_rT is None else fkT + phi_rT                             # (B nh, hs, W)
    H = torch.cat([torch.bmm(aT, vT.transpose(1, 2)), g * scalar(m, g.dtype)], dim=2)   # (B nh, hs, hs+1)
    YT = torch.bmm(H.transpose(1, 2), fqT)                                   # (B nh, hs+1, Wq)
    C = YT[:, m:]                                                            # (B nh, 1, Wq)
    yT = YT[:, :m] / C                                                       # (B nh, hs, Wq), contiguous
    return yT.view(B, D, Wq), (fqT, fkT, aT, vT, mask, s, g, H, yT, C)


def astro_backward(saved, dout, alpha: float, q_rows: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward of ``AstroAttention``: dout (B, nh * hs, Wq), any strides -> (dqT (B, D, Wq), dpT),
    the gradients of ``astro_forward``'s qT and kvT, laid out as the projection lays out its rows.

    dpT is (B, 3D, W), [Q | K | V], with ``q_rows`` (Q projected from every row; its columns past
    Wq, rows that are keys only, are zero, and dqT is a slice of it), else (B, 2D, W), [K | V]:
    the gradient of the packed projection, written in place with no concatenating copy."""
    fqT, fkT, aT, vT, mask, s, g, H, yT, C = saved
    BH, m, Wq = fqT.shape
    W = fkT.shape[-1]
    B = dout.shape[0]
    nh, D = BH // B, dout.shape[1]
    # dY = [dnum | dC], (B nh, hs+1, Wq), contiguous whatever dout's layout; built in place
    # (products in a transposed dout's layout cost several times a contiguous one's), except
    # while torch.compile traces, which takes no ``out=`` into a view
    direct = not torch.compiler.is_compiling()
    if direct:
        dYT = torch.empty(B, nh, m + 1, Wq, dtype=torch.promote_types(dout.dtype, C.dtype), device=dout.device)
        dnum, dC = dYT[:, :, :m], dYT[:, :, m:]
        torch.div(dout.view(B, nh, m, Wq), C.view(B, nh, 1, Wq), out=dnum)
        torch.sum(dnum * yT.view(B, nh, m, Wq), dim=2, keepdim=True, out=dC).neg_()
    else:
        dnum = dout.view(B, nh, m, Wq) / C.view(B, nh, 1, Wq)
        dC = (dnum * yT.view(B, nh, m, Wq)).sum(dim=2, keepdim=True).neg_()
        dYT = torch.cat([dnum, dC], dim=2)
    dYT = dYT.view(BH, m + 1, Wq)
    dfqT = torch.bmm(H, dYT)                                                 # (B nh, hs, Wq)
    dH = torch.bmm(fqT, dYT.transpose(1, 2))                                 # (B nh, hs, hs+1)
    dHn = dH[:, :, :m]                                                       # (B nh, hs, hs)
    dg = dH[:, :, m:]                                                        # (B nh, hs, 1), times m below
    dfkT = torch.bmm(dHn, vT).add_(dg * scalar(m * alpha, dg.dtype) * g / s)   # dA + ds, (B nh, hs, W)
    dvT = torch.bmm(dHn.transpose(1, 2), aT).view(B, D, W)                   # (B, D, W)
    one = scalar(1.0, fqT.dtype)
    dphi_q = torch.clamp_max(fqT, one).view(B, D, Wq)                        # phi'(Q)
    dphi_k = torch.clamp_max(fkT, one).view(B, D, W)                         # phi'(K) (0 where masked)
    dq, dk, dv = dfqT.view(B, D, Wq), dfkT.view(B, D, W), dvT
    out = fkT.new_empty(B, (3 if q_rows else 2) * D, W)

    def put(a, b, dst):   # dst = a * b (a where b is None), dst a view of ``out``
        if direct:
            return dst.copy_(a) if b is None else torch.mul(a, b, out=dst)
        return dst.copy_(a if b is None else a * b)

    if q_rows:
        dq = put(dq, dphi_q, out[:, :D, :Wq])
        if Wq < W:
            out[:, :D, Wq:].zero_()
    else:
        dq = dq.mul_(dphi_q)
    k0 = D * q_rows
    put(dk, dphi_k, out[:, k0:k0 + D])
    put(dv, mask, out[:, k0 + D:])
    return dq, out


class AstroAttention(torch.autograd.Function):
    """phi(Q) (H_neuron + H_astro) / C for all heads at once, one graph node (module doc).

    Feature-major: it takes the projection transposed, qkvT (B, 3 nh hs, W) -- the Q, K and V
    features as rows in the linear layer's own order [Q | K | V], each head's hs rows together,
    the window along the last dimension, as ``Attention`` computes it -- and returns yT
    (B, nh hs, Wq), the heads' outputs as rows. Every batched matmul then reads rows of W
    contiguous values (a head's features) and no permute copy runs in either direction; the
    formulas are those of the module doc, transposed (qT = Q^T ...). ``astro_forward`` /
    ``astro_backward`` are its two halves. Where Q was projected from the query rows only, it
    takes qT (B, nh hs, Wq) and kvT (B, 2 nh hs, W), [K | V], as two inputs instead."""

    @staticmethod
    def forward(ctx, qkvT, kvT, mask, phi_rT, alpha: float, n_heads: int, n_query: int):
        # kvT None: qkvT packed (B, 3D, W); else qkvT is the queries' Q alone, (B, D, Wq)
        ctx.packed = kvT is None
        if ctx.packed:
            qkvT = qkvT.contiguous()   # row slices of a row-major tensor (a projection's output is: no copy)
            D = qkvT.shape[1] // 3
            qT, kvT = qkvT[:, :D, :n_query], qkvT[:, D:]
        else:
            qT, kvT = qkvT.contiguous(), kvT.contiguous()
        yT, saved = astro_forward(qT, kvT, mask, phi_rT, alpha, n_heads)
        ctx.save_for_backward(*saved)
        ctx.alpha = alpha
        return yT

    @staticmethod
    @once_differentiable   # the hand-derived backward has no derivative of its own
    def backward(ctx, dout):
        dq, dpT = astro_backward(ctx.saved_tensors, dout, ctx.alpha, q_rows=ctx.packed)
        if ctx.packed:                                                       # (B, 3D, W) [Q | K | V]
            return dpT, None, None, None, None, None, None
        return dq, dpT, None, None, None, None, None                          # (B, D, Wq), (B, 2D, W)


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype ``torch.autocast`` computes products in on x's device, when it is on and differs
    from x's; else None. The kernels below then run with autocast off and their own dtypes
    (autocast's op lists differ between devices, and a custom Function's backward runs without it)."""
    kind = x.device.type
    if x.dtype != torch.float32 or not torch.is_autocast_enabled(kind):   # autocast lowers float32 only
        return None
    dtype = torch.get_autocast_dtype(kind)
    return None if dtype == x.dtype else dtype


def autocast_off(x: torch.Tensor):
    """A context with ``torch.autocast`` off on x's device while it is on there (else nothing):
    what runs inside keeps its tensors' own dtypes."""
    kind = x.device.type
    return torch.autocast(kind, enabled=False) if torch.is_autocast_enabled(kind) else contextlib.nullcontext()


def key_mask_t(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A (B, W) bool key mask as the feature-major kernel takes it: (B, 1, W) of ``dtype``."""
    return None if mask is None else mask[:, None, :].to(dtype)


def project_t(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A linear layer computed transposed: x (B, W, D_in) -> (B, D_out, W), its output features as rows."""
    return torch.baddbmm(bias.view(-1, 1), weight.expand(x.shape[0], -1, -1), x.transpose(1, 2))


def project_split_t(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                    n_query: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The [Q | K | V] linear layer with Q of the first ``n_query`` rows only (the rest of the
    window being keys only), computed transposed: x (B, W, D_in) -> qT (B, D, n_query), kvT (B, 2D, W)."""
    D = weight.shape[0] // 3
    return project_t(x[:, :n_query], weight[:D], bias[:D]), project_t(x, weight[D:], bias[D:])


def unproject_t(yT: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A linear layer reading its input feature-major: yT (B, D_in, W) -> (B, W, D_out)."""
    # bmm then add_ issues fewer operators than baddbmm (which expands and copies its input first);
    # for the input projection, whose bias runs along the rows, baddbmm measured faster
    return torch.bmm(yT.transpose(1, 2), weight.transpose(0, 1).expand(yT.shape[0], -1, -1)).add_(bias)


def astro_attention_t(qkvT: torch.Tensor, n_heads: int, mask: torch.Tensor | None, phi_rT: torch.Tensor | None,
                      alpha: float, n_query: int | None = None, *, kvT: torch.Tensor | None = None) -> torch.Tensor:
    """Astromorphic attention, feature-major: qkvT (B, 3 nh hs, W), rows [Q | K | V] -> yT
    (B, nh hs, Wq), the first ``n_query`` window positions (all when None) being the queries
    and every position a key. With ``kvT`` (B, 2 nh hs, W), rows [K | V], given, the first
    argument is the queries' Q alone, (B, nh hs, Wq) (a projection of the query rows only), and
    ``n_query`` is its width.

    mask: (B, W) bool (True for real keys), or None when every key is real; phi_rT: phi(R)
    transposed, (m = hs, W), or None (H_astro off: with alpha = 1 this is normalised linear
    attention / m, RLT's kernel)."""
    Wq = qkvT.shape[-1] if n_query is None or kvT is not None else n_query
    if phi_rT is not None and phi_rT.dtype != qkvT.dtype:   # qkvT lowered by autocast
        phi_rT = phi_rT.to(qkvT.dtype)
    # under autocast the kernel runs in qkvT's dtype with autocast off (see autocast_dtype)
    with autocast_off(qkvT):
        return AstroAttention.apply(qkvT, kvT, key_mask_t(mask, qkvT.dtype), phi_rT, float(alpha), n_heads, Wq)


def astro_attention(q, k, v, mask: torch.Tensor | None, phi_r: torch.Tensor | None, alpha: float):
    """The same kernel head-major: q (B, nh, Wq, hs), k, v (B, nh, W, hs) -> (B, nh, Wq, hs),
    the queries being the first Wq positions of the window, phi_r (W, hs) or None (lays Q and
    [K | V] out feature-major and calls ``astro_attention_t``)."""
    B, nh, Wq, hs = q.shape
    W = k.shape[2]
    qT = q.transpose(-2, -1).reshape(B, nh * hs, Wq)
    kvT = torch.stack([k, v], dim=1).transpose(-2, -1).reshape(B, 2 * nh * hs, W)
    yT = astro_attention_t(qT, nh, mask, None if phi_r is None else phi_r.T, alpha, kvT=kvT)   # (B, nh hs, Wq)
    return yT.view(B, nh, hs, Wq).transpose(-2, -1)


def softmax_attention(q, k, v, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Scaled dot-product attention; key_mask (B, W) bool or None when nothing is padded."""
    mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, W)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, W, hs)


# --------------------------------------------------------------------------- dropout
_THREAD = threading.local()


@contextlib.contextmanager
def drawing_from(generator: torch.Generator | None):
    """Inside the block, ``dropout_masks`` on this thread draws from ``generator`` (None: the
    default generator); AMRB records and replays that generator's state instead of the global
    one (rmaat_model.amrb). Other threads keep theirs."""
    before = getattr(_THREAD, "generator", None)
    _THREAD.generator = generator
    try:
        yield
    finally:
        _THREAD.generator = before


def dropout_generator() -> torch.Generator | None:
    """The generator ``dropout_masks`` draws from on this thread (None: the default one)."""
    return getattr(_THREAD, "generator", None)


def dropout_masks(rows: tuple[int, ...], batch: int, width: int, p: float, like: torch.Tensor,
                  active: bool) -> list[torch.Tensor] | None:
    """Inverted-dropout masks (batch, rows[i], width), one per dropout site, from ONE random
    draw, or None when off. Sites: the embeddings, then each block's attention and FFN outputs.

    One draw per segment (or per whole-sequence pass) keeps the RNG calls that AMRB's replay
    must repeat to one, and only rows that are used are drawn (the last block of a memory arch
    computes M rows). The draw is 64 random bits per four mask elements: each 16-bit piece is
    kept when it is at or above a threshold, so p is rounded to a multiple of 2^-16, at most
    1 - 2^-16 (0.1 -> 0.100006), and the kept values are scaled by 1 / (1 - that p): the
    expectation is exact.
    (bernoulli_ costs one generator call per element, three times the time of this draw.)

    In a dtype narrower than float32 (bfloat16, float16) the mask is formed in float32, where
    the 16-bit pieces and the threshold are exact, and converted at the end; the kept value is
    1 / (1 - p) rounded to that dtype (bfloat16: 1.109375 for p = 0.1), and p is rounded to the
    multiple of 2^-16 that makes (1 - p) times that value 1 (p = 0.1: 0.098587). The expectation
    stays exact to 2^-16 where rounding the scale alone would bias every site by up to 0.4 %."""
    if not active or p == 0.0:
        return None
    n = batch * width * sum(rows)
    q, scale = _drop_grid(p, like.dtype)
    narrow = like.dtype not in FULL_PRECISION
    dtype = torch.float32 if narrow else like.dtype
    # kept where the piece is >= q - 32768: (piece - (q - 32769)) * scale is >= scale there and
    # <= 0 elsewhere, so the clamp gives exactly {0, scale} (no bool tensor to convert); on the
    # CPU the C++ extension takes the same 64-bit values from the generator and forms the same
    # values from them in one pass, leaving the generator where random_ does (no call into the
    # library per value, as random_ makes)
    gen = dropout_generator()
    ext = native.extension() if like.device.type == "cpu" and native.usable(like) else None
    if ext is not None:
        keep = ext.dropout_draw(n, q - 32768, scale, dtype, gen)
    else:
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device).random_(-2 ** 63, None,
                                                                                        generator=gen)
        keep = (bits.view(torch.int16)[:n].to(dtype).sub_(scalar(q - 32769, dtype))
                .mul_(scalar(scale, dtype)).clamp_(0.0, scale))   # (0-dim tensor bounds: 8x slower)
    if narrow:
        keep = keep.to(like.dtype)
    masks, offset = [], keep.storage_offset()
    for r in rows:   # site i: the next batch * r * width values, as (batch, r, width)
        masks.append(keep.as_strided((batch, r, width), (r * width, width, 1), offset))
        offset += batch * r * width
    return masks


@functools.lru_cache(maxsize=None)
def _drop_grid(p: float, dtype: torch.dtype) -> tuple[int, float]:
    """(q, scale) of ``dropout_masks``: q of the 65536 16-bit values are dropped, the rest kept
    at ``scale``. In a narrow dtype, scale is 1 / (1 - p) as the dtype holds it and q the
    count that keeps (1 - q / 65536) * scale = 1."""
    q = min(round(p * 65536), 65535)   # p within 2^-17 of 1 would drop every value: the largest q below
    scale = 65536 / (65536 - q)
    if dtype in FULL_PRECISION:
        return q, scale
    scale = torch.tensor(scale).to(dtype).item()
    return min(max(round(65536 - 65536 / scale), 0), 65535), scale


def mask_rows(n_layers: int, window: int, emb_rows: int, last_queries: int | None) -> tuple[int, ...]:
    """Rows of each dropout site for ``dropout_masks``: embeddings, then two per block."""
    last = window if last_queries is None else last_queries
    return (emb_rows,) + (window,) * (2 * n_layers - 2) + (last, last)


def layer_masks(masks: list[torch.Tensor] | None, i: int) -> list[torch.Tensor] | None:
    """Block i's two masks of a ``dropout_masks`` draw (index 0: embeddings)."""
    return None if masks is None else masks[1 + 2 * i:3 + 2 * i]

