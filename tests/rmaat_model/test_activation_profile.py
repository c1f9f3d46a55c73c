"""Memory probes: saved-for-backward bytes (exact), and AMRB's flat activation memory."""

from __future__ import annotations

import torch

from rmaat_model.amrb import forward_backward
from rmaat_model.activation_profile import SavedTensors, peak_rss, saved_bytes
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig

from model_fixtures import one_thread  # noqa: F401  (autouse)

CFG = dict(arch="rmaat", retention="none", vocab_size=20, n_classes=3, max_len=1024, d_model=16,
           n_heads=2, n_layers=2, d_ff=32, segment_len=16, n_mem=3, dropout=0.1)


def test_saved_bytes_known_answer():
    x = torch.randn(1000, requires_grad=True)                 # 4000 bytes
    w = torch.randn(1000)
    with SavedTensors() as c:
        y = (x * w).exp()          # mul saves w (x's gradient needs it; w needs none), exp its result
        assert c.current_bytes == 8000
        z = y.view(10, 100).sum() + (y * y).sum()             # y * y saves y twice: one storage
        assert c.current_bytes == 8000 and c.peak_bytes == 8000
        z.backward()
        del y, z
    assert c.current_bytes == 0 and c.packed_bytes == 8000    # freed with the graph
    with SavedTensors(ignore=[w]) as c:
        (x * w).sum().backward()
    assert c.packed_bytes == 0                                # ignored storages are not counted


def measure(method, T):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**CFG))
    x = torch.randint(1, 20, (2, 16 * T))
    y = torch.tensor([0, 1])
    return saved_bytes(lambda: forward_backward(model, x, y, method=method),
                       ignore=list(model.parameters()))["peak_bytes"]


def test_amrb_activation_memory_is_flat_in_T_bptt_linear():
    amrb = {T: measure("amrb", T) for T in (2, 16)}
    bptt = {T: measure("bptt", T) for T in (2, 16)}
    assert amrb[16] < 1.2 * amrb[2], amrb                   # one segment's graph, whatever T
    assert bptt[16] > 6 * bptt[2], bptt                     # every segment's graph (ideal 8x)
    assert bptt[16] > 8 * amrb[16]


def test_peak_rss_of_a_step_in_a_fresh_process():
    kw = dict(model=CFG, batch=4, length=1024, threads=1)
    bptt = peak_rss("rmaat_model.activation_profile:training_step", kw | {"method": "bptt"}, timeout=120)
    amrb = peak_rss("rmaat_model.activation_profile:training_step", kw | {"method": "amrb"}, timeout=120)
    assert bptt["hwm_reset"] and bptt["rss_before_bytes"] > 0
    # 64 segments of activations vs one: the OS sees it too (generous: allocator noise)
    assert bptt["peak_rss_increase_bytes"] > 2 * amrb["peak_rss_increase_bytes"], (bptt, amrb)
