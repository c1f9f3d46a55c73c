"""Mixed precision: every arch trains under ``torch.autocast`` (bfloat16 on the CPU here; the
kernels turn autocast off inside and choose their dtypes themselves, so CUDA runs the same
dtypes). The fused post-LN block keeps its residual sums and LayerNorms in float32, as autocast
runs the module path; gradients come back float32 and point where the float32 ones point; AMRB
still gives BPTT's gradients."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rmaat_model import amrb
from rmaat_model.amrb import forward_backward
from rmaat_model.kernels import dropout_masks
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig

from model_fixtures import one_thread  # noqa: F401  (autouse)

CFG = dict(vocab_size=32, n_classes=10, max_len=128, segment_len=32, d_model=32, n_heads=2, d_ff=64,
           n_mem=4, dropout=0.1)


def step(model, x, y, method, mixed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
        loss, logits = forward_backward(model, x, y, method=method)
    return loss, logits, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_grads_within(g, ref, tol):
    """Every gradient of ``ref`` agrees with ``g``'s to ``tol(name)`` of its largest magnitude."""
    for k in ref:
        err = float((g[k] - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-30))
        assert err <= tol(k), f"{k}: {err:.2e}"


def ragged_batch():
    """Three sequences of 128 tokens, one of them 70: padding, and a sequence that finishes first."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, 32, (3, 128), generator=g)
    x[0, 70:] = 0
    return x, torch.randint(0, 10, (3,), generator=g)


@pytest.mark.parametrize("arch, retention, norm", [
    ("rmaat", "ltp", "post"), ("rmaat", "ltp", "pre"), ("rmaat", "learned", "post"), ("rlt", "none", "post"),
    ("at", "none", "post"), ("rmt", "none", "post"), ("transformer", "none", "post"), ("elastic", "none", "post")])
def test_every_arch_trains_under_autocast(arch, retention, norm):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, retention=retention, norm=norm, **CFG))
    x, y = ragged_batch()
    l32, _, g32 = step(model, x, y, "bptt", False)
    l16, z16, g16 = step(model, x, y, "bptt", True)
    assert g16.keys() == g32.keys()
    assert all(t.dtype == torch.float32 and bool(torch.isfinite(t).all()) for t in g16.values())
    assert abs(float(l16) - float(l32)) < 2e-2                      # bf16 has 8 significant bits
    flat = lambda d: torch.cat([d[k].flatten() for k in g32])
    assert F.cosine_similarity(flat(g16), flat(g32), dim=0) > 0.999
    if model.has_memory:
        la, za, ga = step(model, x, y, "amrb", True)
        assert torch.equal(la, l16) and torch.equal(za, z16)
        # the fused blocks cast the weights per call: the same sums as BPTT; the module path's
        # autocast casts each weight once per graph, so BPTT sums its segments' gradients in bf16
        tol = 0.0 if model.blocks[0].fused else 2e-2
        assert_grads_within(ga, g16, lambda k: tol)


@pytest.mark.parametrize("arch, retention", [("rmaat", "ltp"), ("rmaat", "learned"), ("rlt", "none")])
def test_amrb_reading_a_ragged_loss_by_segment_under_autocast(monkeypatch, arch, retention):
    """With the finished sequence's loss read in the replay of its last segment (forced here:
    the test's segments are far too small to be worth it), AMRB still gives BPTT's gradients
    under autocast, to float32 round-off (its loss is summed by segment) -- except the
    classifier's, whose gradient AMRB sums over the segments in float32 where BPTT's one
    product sums it in bfloat16 (measured 2.9e-3)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, retention=retention, **CFG))
    monkeypatch.setattr(amrb, "EARLY_READ_MIN_MACS", 0)
    x, y = ragged_batch()
    l16, z16, g16 = step(model, x, y, "bptt", True)
    la, za, ga = step(model, x, y, "amrb", True)
    torch.testing.assert_close(la, l16, rtol=1e-6, atol=0)
    torch.testing.assert_close(za, z16, rtol=1e-6, atol=1e-6)
    assert_grads_within(ga, g16, lambda k: 1e-2 if k.startswith("head.") else 1e-5)
    assert float((ga["head.weight"] - g16["head.weight"]).abs().max()) > 0   # the early read ran


@pytest.mark.parametrize("n_query", [None, 4], ids=["all-rows", "memory-rows"])
def test_the_fused_block_runs_mixed_as_autocast_runs_the_module_path(n_query):
    torch.manual_seed(0)
    block = build_model(ModelConfig(arch="rmaat", **CFG)).blocks[0]
    for p in block.parameters():   # away from the initialisation's zeros and ones
        p.data.add_(torch.randn_like(p) * 0.1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 36, 32, generator=g)
    key_mask = torch.ones(3, 36, dtype=torch.bool)
    key_mask[1, 20:] = False
    Wq = 36 if n_query is None else n_query
    masks = dropout_masks((Wq, Wq), 3, 32, 0.1, x, True)
    w = torch.randn(3, Wq, 32, generator=g)
    out = {}
    for fused in (False, True):
        block.fused = fused
        block.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = block(xi, key_mask, False, n_query, masks)
        assert y.dtype == torch.float32                               # LayerNorm output, as autocast gives
        (y * w).sum().backward()
        out[fused] = (y.detach(), xi.grad, {n: p.grad for n, p in block.named_parameters()})
    ref, got = out[False], out[True]
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=3e-2)     # bf16 products either way
    for a, b, name in [(got[1], ref[1], "dx")] + [(got[2][n], ref[2][n], n) for n in ref[2]]:
        assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999, name


def test_the_gpu_check_script_runs_on_the_cpu():
    """bench/gpu_check.py has had no GPU to run on: its CPU mode runs the same code at a small
    size, so a lent device's minutes are not spent on a broken script. Exit 0 means AMRB's
    gradients matched BPTT's (the script exits 1 past its bound)."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    run = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--quick"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    worst = float(re.search(r"worst relative difference (\S+)", run.stdout).group(1))
    assert worst <= 1e-4
    assert re.search(r"3\. float32: .* ratio", run.stdout) and re.search(r"3\. bfloat16: .* ratio", run.stdout)


def test_a_float64_model_is_left_alone_by_autocast():
    """autocast lowers float32 only: a float64 model gives the same loss and gradients with it on."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="rmaat", retention="none", **CFG)).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randint(1, 32, (2, 128), generator=g)
    x[1, 90:] = 0
    y = torch.randint(0, 10, (2,), generator=g)
    l64, z64, g64 = step(model, x, y, "amrb", False)
    lac, zac, gac = step(model, x, y, "amrb", True)
    assert torch.equal(l64, lac) and torch.equal(z64, zac)
    assert all(torch.equal(gac[k], g64[k]) for k in g64)


def test_reduced_precision_kernels_take_full_precision_constants():
    """alpha = 0.3 in bfloat16 would be 0.30078, and m * alpha would round differently in the
    backward: the kernels' constants stay Python numbers in a reduced-precision dtype."""
    from rmaat_model.kernels import scalar
    assert scalar(0.3, torch.bfloat16) == 0.3 and isinstance(scalar(0.3, torch.float16), float)
    assert isinstance(scalar(0.3, torch.float32), torch.Tensor) and scalar(0.3, torch.float32).dtype == torch.float32


def test_elastic_history_is_kept_in_float32_under_autocast():
    """The LegS recurrence runs in the state's dtype under autocast: with writes that bfloat16
    holds exactly (an identity write map, integer features), 12 segments of history (some
    sequences ending inside a segment) agree with the float32 run to float32 round-off.
    Rounding each segment's state to bfloat16 would be off by ~1e-3."""
    from rmaat_model.elastic import ElasticMemory
    torch.manual_seed(0)
    mem = ElasticMemory(d_model=8, d_mem=8, n_coef=16, n_samples=6, segment_len=16, max_segments=8)
    with torch.no_grad():
        mem.write_proj.weight.copy_(torch.eye(8))
        mem.write_proj.bias.zero_()
    hs = [torch.randint(-8, 9, (3, 16, 8)).float() for _ in range(12)]
    lengths = torch.tensor([12 * 16, 11 * 16 - 5, 7 * 16 + 3])

    def history(mixed):
        c = mem.initial_state(3)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
            for t, h in enumerate(hs):
                mask = torch.arange(t * 16, t * 16 + 16)[None, :] < lengths[:, None]
                c = mem.write(c, h, t, mask)
        return c

    c32, c16 = history(False), history(True)
    assert c16.dtype == torch.float32
    err = ((c16 - c32).abs().max() / c32.abs().max()).item()
    assert err < 1e-5, err
