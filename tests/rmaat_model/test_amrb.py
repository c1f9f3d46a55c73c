"""AMRB gives the gradients of full BPTT (dropout on); truncated BPTT(k) truncates."""

from __future__ import annotations

import time

import pytest
import torch

from astro_rmaat.errors import ConfigError
from rmaat_model import amrb
from rmaat_model.amrb import forward_backward, run_segments
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig

from model_fixtures import one_thread  # noqa: F401  (autouse)
from model_fixtures import write_retention

SMALL = dict(vocab_size=20, n_classes=3, max_len=160, d_model=16, n_heads=2, n_layers=2, d_ff=32,
             segment_len=16, n_mem=3, dropout=0.2)

# float32 bound: |g_amrb - g_bptt| <= RTOL_F32 * max|g_bptt| per parameter tensor. The two
# differ only in summation order: across segments (both accumulate the last segment first) and,
# in a ragged batch, of the loss's terms and of the classifier's gradient, which AMRB gathers
# segment by segment; its no-grad pass also computes fewer rows, where a product can round
# otherwise. So the float64 run must agree to 1e-12.
RTOL_F32, RTOL_F64 = 1e-5, 1e-12


def grads(model, tokens, labels, method, seed=7, tokens2=None, **kw):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss, logits = forward_backward(model, tokens, labels, method=method, tokens2=tokens2, **kw)
    return loss, logits, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(a, b, rtol):
    assert a.keys() == b.keys()
    for name in a:
        scale = a[name].abs().max().clamp_min(1e-30)
        err = (a[name] - b[name]).abs().max() / scale
        assert err <= rtol, f"{name}: relative difference {err:.3g} > {rtol:g}"


def batch(seed=0, B=3, L=120, pad_row=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 20, (B, L), generator=g)
    if pad_row:
        x[0, 37:] = 0                                          # one short sequence: T_b = 3 of 8
    return x, torch.randint(0, 3, (B,), generator=g)


@pytest.mark.parametrize("arch, retention, dtype", [
    ("rmaat", "ltp", torch.float32), ("rmaat", "learned", torch.float32), ("rmt", "none", torch.float32),
    ("rlt", "none", torch.float32), ("rmaat", "ltp", torch.float64), ("elastic", "none", torch.float32),
    ("elastic", "none", torch.float64)])
def test_amrb_gradients_equal_full_bptt_with_dropout(tmp_path, arch, retention, dtype):
    rfile = str(write_retention(tmp_path / "r.json"))
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, retention=retention, retention_file=rfile, **SMALL)).to(dtype)
    assert model.training and model.cfg.dropout > 0
    assert_amrb_is_bptt(model, *batch(), RTOL_F32 if dtype == torch.float32 else RTOL_F64)


def assert_amrb_is_bptt(model, x, y, rtol):
    """AMRB's gradients (every parameter gets one), loss and logits equal BPTT's to ``rtol``, and
    the RNG is left in the same state (the next draw agrees)."""
    l_b, z_b, g_b = grads(model, x, y, "bptt")
    l_a, z_a, g_a = grads(model, x, y, "amrb")
    assert_same_grads(g_b, g_a, rtol)
    assert len(g_b) == len(list(model.parameters()))
    torch.testing.assert_close(l_a, l_b, rtol=rtol, atol=0)
    torch.testing.assert_close(z_a, z_b, rtol=rtol, atol=rtol)
    torch.manual_seed(7); forward_backward(model, x, y, method="bptt"); after_b = torch.rand(1)
    torch.manual_seed(7); forward_backward(model, x, y, method="amrb"); after_a = torch.rand(1)
    assert after_a == after_b


def test_replay_without_the_rng_state_would_differ(monkeypatch):
    """Negative control: dropout is live, so skipping the RNG restore breaks equality."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="rmt", retention="none", **SMALL))
    x, y = batch()
    _, _, g_b = grads(model, x, y, "bptt")
    monkeypatch.setattr(amrb, "_set_rng_state", lambda state, devices: None)
    _, _, g_a = grads(model, x, y, "amrb")
    worst = max(((g_a[n] - g_b[n]).abs().max() / g_b[n].abs().max()).item() for n in g_b)
    assert worst > 1e-2


def test_amrb_on_the_matching_head_and_whole_sequence_archs(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="rmaat", retention="none", head="match", **SMALL))
    x, y = batch()
    x2, _ = batch(seed=1, L=70)
    _, _, g_b = grads(model, x, y, "bptt", tokens2=x2)
    _, _, g_a = grads(model, x, y, "amrb", tokens2=x2)
    assert_same_grads(g_b, g_a, RTOL_F32)
    for arch, scope in (("transformer", "sequence"), ("at", "sequence"), ("at", "segment")):
        torch.manual_seed(0)                                   # one window: every method is backprop
        m = build_model(ModelConfig(arch=arch, at_scope=scope, **SMALL))
        _, _, g_b = grads(m, x, y, "bptt")
        _, _, g_a = grads(m, x, y, "amrb")
        assert_same_grads(g_b, g_a, 0.0)


def test_forward_backward_accumulates_like_backward():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="rlt", retention="none", **{**SMALL, "dropout": 0.0}))
    x, y = batch()
    _, _, g1 = grads(model, x, y, "amrb")
    forward_backward(model, x, y, method="amrb")               # second call on top of the first
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * g1[n])


# --------------------------------------------------------------------------- generic recurrence
class Cell(torch.nn.Module):
    """A toy step (segment, memory) -> (output, memory) with dropout."""

    def __init__(self, d=6):
        super().__init__()
        self.inp, self.rec, self.out = torch.nn.Linear(d, d), torch.nn.Linear(d, d), torch.nn.Linear(d, 2)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x, m):
        m = torch.tanh(self.inp(self.drop(x)) + self.rec(m))
        return self.out(m), m


def toy(method, loss_on, k=None, seed=3, T=6):
    torch.manual_seed(0)
    cell = Cell().double()
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(T)]
    m0 = torch.zeros(4, 6, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(seed)
    loss, out = run_segments(cell, xs, m0, lambda o, i: (o ** 2).mean() * (i + 1), method=method,
                             k=k, loss_on=loss_on)
    return loss, {n: p.grad for n, p in cell.named_parameters()} | {"m0": m0.grad}, cell, xs


@pytest.mark.parametrize("loss_on", ["last", "every"])
def test_generic_amrb_equals_bptt(loss_on):
    l_b, g_b, *_ = toy("bptt", loss_on)
    l_a, g_a, *_ = toy("amrb", loss_on)
    assert_same_grads(g_b, g_a, RTOL_F64)
    assert abs(l_a - l_b) < 1e-12
    l_t, g_t, *_ = toy("tbptt", loss_on, k=6)                  # k = T: no truncation
    assert_same_grads(g_b, g_t, RTOL_F64)


@pytest.mark.parametrize("loss_on", ["last", "every"])
def test_truncated_bptt_cuts_the_memory_gradient_every_k(loss_on):
    _, g_t, cell, xs = toy("tbptt", loss_on, k=2)
    # reference: one graph, memory detached at the chunk boundaries T-2, T-4 (segments 4, 2)
    cell.zero_grad()
    m = torch.zeros(4, 6, dtype=torch.float64, requires_grad=True)
    m0 = m
    torch.manual_seed(3)
    total = 0
    for i, x in enumerate(xs):
        if i in (2, 4):
            m = m.detach()
        o, m = cell(x, m)
        if loss_on == "every" or i == len(xs) - 1:
            total = total + (o ** 2).mean() * (i + 1)
    total.backward()
    ref = {n: p.grad for n, p in cell.named_parameters()} | {"m0": m0.grad}
    if loss_on == "last":
        assert g_t["m0"] is None and ref["m0"] is None         # no gradient reaches the start
        del g_t["m0"], ref["m0"]
    assert_same_grads(ref, g_t, RTOL_F64)
    _, g_full, *_ = toy("bptt", loss_on)
    assert (g_full["rec.weight"] - g_t["rec.weight"]).abs().max() > 1e-6


def test_bad_methods():
    with pytest.raises(ConfigError, match="truncated BPTT needs k"):
        toy("tbptt", "last", k=None)
    with pytest.raises(ConfigError, match="method = 'sgd'"):
        toy("sgd", "last")


def test_compiled_blocks_keep_amrb_exact_and_match_eager(tmp_path):
    """torch.compile path (RMAAT.compile_blocks): AMRB through the compiled block stack equals
    BPTT through it (dropout on, the last segment padded), and both equal the eager model's
    gradients to float32 round-off (fused kernels sum in another order). The sequences share
    one length, so three graphs are compiled (no-grad, with grad, with grad and a key mask):
    which rows a segment computes is decided outside the compiled stack (``Plan.rows``)."""
    rfile = str(write_retention(tmp_path / "r.json"))
    torch.manual_seed(0)
    eager = build_model(ModelConfig(arch="rmaat", retention="ltp", retention_file=rfile, **SMALL))
    torch.manual_seed(0)
    compiled = build_model(ModelConfig(arch="rmaat", retention="ltp", retention_file=rfile, **SMALL)).compile_blocks()
    x, y = batch(pad_row=False)                                # 120 tokens: 7 segments and a half
    _, _, g_e = grads(eager, x, y, "bptt")
    l_b, _, g_b = grads(compiled, x, y, "bptt")
    l_a, _, g_a = grads(compiled, x, y, "amrb")
    from torch._dynamo.utils import counters
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]   # compiled, whole
    assert_same_grads(g_b, g_a, RTOL_F32)
    assert_same_grads(g_e, g_a, 1e-4)
    torch.testing.assert_close(l_a, l_b, rtol=RTOL_F32, atol=0)


def test_compile_blocks_refuses_dynamic_true_before_compiling(tmp_path):
    """dynamic=True fails deep in dynamo at the first forward under torch 2.13 (docs/model.md);
    compile_blocks refuses it at the call, in one line, and leaves the model eager."""
    rfile = str(write_retention(tmp_path / "r.json"))
    model = build_model(ModelConfig(arch="rmaat", retention="ltp", retention_file=rfile, **SMALL))
    with pytest.raises(ConfigError, match=r"compile_blocks\(dynamic=True\).*111031") as err:
        model.compile_blocks(dynamic=True)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"compile_blocks\(dynamic=1\)"):
        model.compile_blocks(dynamic=1)
    assert model._compiled_window is None


def test_compiled_amrb_first_on_padded_data(tmp_path, monkeypatch):
    """A compiled model whose very first step is AMRB on padded segments: the kernels' cached
    constants must not be created inside the compiled graph during the inference-mode first
    pass (an inference tensor there cannot be saved by the replay's graph)."""
    from rmaat_model import kernels
    monkeypatch.setattr(kernels, "_SCALARS", {})                 # as in a fresh process
    rfile = str(write_retention(tmp_path / "r.json"))
    torch.manual_seed(0)
    compiled = build_model(ModelConfig(arch="rmaat", retention="ltp", retention_file=rfile, **SMALL)
                           ).compile_blocks(backend="aot_eager")
    x, y = batch(seed=4)                                          # one short sequence: padded segments
    l_a, _, g_a = grads(compiled, x, y, "amrb")
    assert not any(t.is_inference() for t in kernels._SCALARS.values())
    l_b, _, g_b = grads(compiled, x, y, "bptt")
    assert torch.equal(l_a, l_b)
    assert_same_grads(g_a, g_b, RTOL_F32)


def test_amrb_keeps_one_memory_per_replayed_segment_and_reports_its_phases(tmp_path):
    """``stats``: AMRB keeps exactly the memories entering segments 1..T-1 (B x M x D each)
    and its phases (no-grad pass, forwards and backwards with graphs, bookkeeping) add up to
    the step; BPTT reports its forward and backward."""
    rfile = str(write_retention(tmp_path / "r.json"))
    model = build_model(ModelConfig(arch="rmaat", retention="ltp", retention_file=rfile, **SMALL))
    x, y = batch(pad_row=False)                              # 120 tokens: T = 8 segments of 16
    st: dict = {}
    t0 = time.perf_counter()
    forward_backward(model, x, y, method="amrb", stats=st)
    wall = time.perf_counter() - t0
    B, M, D = 3, SMALL["n_mem"], SMALL["d_model"]
    assert st["stored_memory_bytes"] == 7 * B * M * D * 4
    phases = [st[k] for k in ("nograd_s", "forward_s", "backward_s", "other_s")]
    assert all(p >= 0 for p in phases) and sum(phases) <= wall
    bp: dict = {}
    forward_backward(model, x, y, method="bptt", stats=bp)
    assert set(bp) == {"forward_s", "backward_s"} and min(bp.values()) > 0


def flops(fn) -> int:
    """Matrix-product FLOPs of ``fn()`` (``FlopCounterMode``)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("arch, retention", [("rmaat", "ltp"), ("rlt", "none"), ("rmt", "none")])
def test_amrb_adds_exactly_one_no_grad_forward_per_replayed_segment_in_arithmetic(tmp_path, arch, retention):
    """Counted in matrix-product FLOPs (``FlopCounterMode``): BPTT's step is three forwards
    (each product's backward is two products), and AMRB's is BPTT's plus one no-grad forward
    of each of the first T-1 segments, nothing more. So AMRB / BPTT = 1 + (T-1) f / (3 F)
    with f one segment's forward and F the whole forward: 1 + (T-1) / (3 T) without the head."""
    rfile = str(write_retention(tmp_path / "r.json"))
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, retention=retention, retention_file=rfile, **SMALL))
    x, y = batch(pad_row=False)                              # 120 tokens: T = 8 full segments of 16
    T = 8
    f_bptt = flops(lambda: forward_backward(model, x, y, method="bptt"))
    f_amrb = flops(lambda: forward_backward(model, x, y, method="amrb"))
    with torch.no_grad():
        f_whole = flops(lambda: model(x))
        plan = model.plan(x)
        memory = model.initial_memory(plan)
        f_seg = flops(lambda: model.step(plan, 0, memory))
    assert f_seg > 0 and f_whole > T * f_seg                  # the head's product is the rest
    assert f_bptt == 3 * f_whole
    assert f_amrb - f_bptt == (T - 1) * f_seg


def ragged_batch():
    """Five sequences of 3, 8, 1, 5 and 3 segments of 16 tokens: they end in four different
    segments (one, two, one and one of them before the last), one in the first segment, and
    short ones sit after long ones, so AMRB's no-grad pass computes a subset of the rows running
    at a segment that is itself a subset."""
    g = torch.Generator().manual_seed(5)
    x = torch.randint(1, 20, (5, 128), generator=g)
    for b, n in enumerate((40, 128, 10, 70, 48)):
        x[b, n:] = 0
    return x, torch.randint(0, 3, (5,), generator=g)


# Which groups of sequences ending before the last segment have their loss read early, by
# amrb.EARLY_READ_MIN_MACS: all of them (0), only the group of two (2 rows' worth), none (the
# default, for SMALL's tiny segments). For ragged_batch(): (no-grad row-segments, extra
# classifier passes). Reading at the end costs min(T_b, T - 1) no-grad segments of a sequence,
# reading early T_b - 1.
READS = {"every group": (0, 15, 3), "the pair": (2, 17, 1), "none (default)": (None, 19, 0)}


def early_reads(monkeypatch, model, which):
    rows = READS[which][0]
    if rows is not None:
        monkeypatch.setattr(amrb, "EARLY_READ_MIN_MACS", rows * amrb.segment_row_macs(model.cfg))


@pytest.mark.parametrize("which", list(READS))
@pytest.mark.parametrize("arch, retention", [("rmaat", "ltp"), ("rmaat", "learned"), ("rmt", "none")])
def test_amrb_on_a_ragged_batch_recomputes_only_the_segments_a_later_one_reads(tmp_path, monkeypatch, arch,
                                                                                retention, which):
    """A sequence of T_b segments in a batch of T > T_b whose loss is read in the replay of its last
    segment: the no-grad pass runs its segments 0..T_b-2 only -- (T_b - 1) segment forwards of
    its row beyond BPTT, counted in matrix-product FLOPs, as on equal lengths; read at the end,
    one more. The classifier (forward and backward, on every row) runs once more for each segment
    read early. By default the tiny model here reads every loss at the end."""
    rfile = str(write_retention(tmp_path / "r.json"))
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, retention=retention, retention_file=rfile, **SMALL))
    early_reads(monkeypatch, model, which)
    x, y = ragged_batch()
    plan = model.plan(x)
    assert plan.n_seg.tolist() == [3, 8, 1, 5, 3]
    f_bptt = flops(lambda: forward_backward(model, x, y, method="bptt"))
    f_amrb = flops(lambda: forward_backward(model, x, y, method="amrb"))
    with torch.no_grad():
        f_row = flops(lambda: model.step(plan, 0, model.initial_memory(plan))) // 5
        state = model.initial_memory(plan).clone()
    state.requires_grad_(True)
    f_head = flops(lambda: torch.nn.functional.cross_entropy(model.readout(plan, state), y).backward())
    assert f_row > 0 and f_head > 0
    _, row_segments, heads = READS[which]
    assert f_amrb - f_bptt == row_segments * f_row + heads * f_head


@pytest.mark.parametrize("which", ["every group", "the pair"])
@pytest.mark.parametrize("arch, retention, reading, dtype", [
    ("rmaat", "ltp", "integrating", torch.float32), ("rmaat", "ltp", "literal", torch.float32),
    ("rmaat", "learned", "integrating", torch.float32), ("rmaat", "learned", "literal", torch.float32),
    ("rmaat", "ltp", "integrating", torch.float64), ("rlt", "none", "integrating", torch.float32),
    ("rmt", "none", "integrating", torch.float32)])
def test_amrb_equals_bptt_on_sequences_ending_in_several_segments(tmp_path, monkeypatch, arch, retention, reading,
                                                                   dtype, which):
    """Losses read early (each in the replay of its sequences' last segment, the no-grad pass on
    the rows that run on, their dropout masks picked out of every running row's draw), next to
    losses read at the end: BPTT's gradients, loss, logits in the batch's row order, RNG state."""
    rfile = str(write_retention(tmp_path / "r.json"))
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, retention=retention, retention_reading=reading,
                                    retention_file=rfile, **SMALL)).to(dtype)
    early_reads(monkeypatch, model, which)
    assert_amrb_is_bptt(model, *ragged_batch(), RTOL_F32 if dtype == torch.float32 else RTOL_F64)


def test_a_custom_loss_on_a_ragged_batch_is_read_at_the_end(monkeypatch):
    """Only cross-entropy's mean is split by segment: a sum, or class weights, would not split into
    the same gradients, so a custom loss_fn is read on the final states, as BPTT reads it. An
    ignore_index label on a sequence whose loss is read alone keeps the mean over the other labels."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="rmaat", retention="none", **SMALL))
    monkeypatch.setattr(amrb, "EARLY_READ_MIN_MACS", 0)        # every group would be read early
    x, y = ragged_batch()
    weights = torch.tensor([0.2, 1.0, 3.0])
    for loss_fn in (lambda z, t: F.cross_entropy(z, t, reduction="sum"),
                    lambda z, t: F.cross_entropy(z, t, weight=weights)):
        l_b, _, g_b = grads(model, x, y, "bptt", loss_fn=loss_fn)
        l_a, _, g_a = grads(model, x, y, "amrb", loss_fn=loss_fn)
        assert_same_grads(g_b, g_a, RTOL_F32)
        torch.testing.assert_close(l_a, l_b, rtol=RTOL_F32, atol=0)
    y_ignored = y.clone()
    y_ignored[2] = -100                                      # the one-segment sequence, read in segment 0
    l_b, _, g_b = grads(model, x, y_ignored, "bptt")
    l_a, _, g_a = grads(model, x, y_ignored, "amrb")
    assert torch.isfinite(l_a)
    torch.testing.assert_close(l_a, l_b, rtol=RTOL_F32, atol=0)
    assert_same_grads(g_b, g_a, RTOL_F32)


def test_generic_amrb_runs_its_nograd_step_in_the_first_pass_and_skips_segments_without_a_loss():
    """``nograd_step`` replaces ``step`` in AMRB's no-grad pass (its output is never read there);
    a loss_fn returning None gives that segment no loss, under every method."""
    calls = {"step": 0, "nograd": 0}
    torch.manual_seed(0)
    cell = Cell().double()

    def step(x, m):
        calls["step"] += 1
        return cell(x, m)

    def nograd_step(x, m):
        calls["nograd"] += 1
        return None, cell(x, m)[1]

    def loss_fn(o, i):
        return None if i % 2 else (o ** 2).mean() * (i + 1)

    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(6)]
    out = {}
    for method in ("bptt", "amrb"):
        cell.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        loss, _ = run_segments(step, xs, torch.zeros(4, 6, dtype=torch.float64), loss_fn, method=method,
                               loss_on="every", nograd_step=nograd_step)
        out[method] = (loss, {n: p.grad.clone() for n, p in cell.named_parameters()})
    assert calls == {"step": 6 + 6, "nograd": 5}                # bptt 6; amrb: 5 no-grad, 6 with graphs
    torch.testing.assert_close(out["amrb"][0], out["bptt"][0], rtol=1e-12, atol=0)
    assert_same_grads(out["bptt"][1], out["amrb"][1], RTOL_F64)


# --------------------------------------------------------------------------- overlapped replays
@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("which", ["every group", "none (default)"])
@pytest.mark.parametrize("arch, retention, dtype", [
    ("rmaat", "ltp", torch.float32), ("rmaat", "learned", torch.float32), ("rmt", "none", torch.float32),
    ("rmaat", "ltp", torch.float64), ("elastic", "none", torch.float32)])
def test_overlapped_replays_give_bptts_gradients_and_the_same_bits_each_time(tmp_path, monkeypatch, two_threads,
                                                                             arch, retention, dtype, which):
    """Replays on a second thread, one segment ahead of the backward, on a ragged batch with
    dropout (losses read early or at the end): BPTT's gradients, loss, logits and RNG state;
    the same bits on a second run; torch's thread count as it was."""
    rfile = str(write_retention(tmp_path / "r.json"))
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, retention=retention, retention_file=rfile, **SMALL)).to(dtype)
    early_reads(monkeypatch, model, which)
    x, y = ragged_batch()
    rtol = RTOL_F32 if dtype == torch.float32 else RTOL_F64
    l_b, z_b, g_b = grads(model, x, y, "bptt")
    l_o, z_o, g_o = grads(model, x, y, "amrb", overlap=True)
    assert torch.get_num_threads() == 2
    assert_same_grads(g_b, g_o, rtol)
    assert len(g_o) == len(list(model.parameters()))
    torch.testing.assert_close(l_o, l_b, rtol=rtol, atol=0)
    torch.testing.assert_close(z_o, z_b, rtol=rtol, atol=rtol)
    again = grads(model, x, y, "amrb", overlap=True)
    assert torch.equal(again[0], l_o) and torch.equal(again[1], z_o)
    assert all(torch.equal(again[2][n], g_o[n]) for n in g_o)
    torch.manual_seed(7); forward_backward(model, x, y, method="bptt"); after_b = torch.rand(1)
    torch.manual_seed(7); forward_backward(model, x, y, method="amrb", overlap=True); after_o = torch.rand(1)
    assert after_o == after_b


def test_overlapped_replays_run_on_their_own_thread_with_half_the_threads(monkeypatch, two_threads):
    """The last segment runs on the caller's thread straight after the no-grad pass; every
    replay on the replay thread, with one intra-op thread of the two, while the caller's
    backward runs with one as well; both counts are restored after."""
    import threading
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="rmaat", retention="none", **SMALL))
    x, y = batch(pad_row=False)
    seen = []
    real_step = model.step

    def step(plan, t, state, **kw):
        seen.append((t, torch.is_grad_enabled(), threading.current_thread().name.split("_")[0],
                     torch.get_num_threads()))
        return real_step(plan, t, state, **kw)

    monkeypatch.setattr(model, "step", step)
    forward_backward(model, x, y, method="amrb", overlap=True)
    T = model.plan(x).n_segments
    main = threading.current_thread().name
    assert seen[:T - 1] == [(t, False, main, 2) for t in range(T - 1)]        # the no-grad pass
    assert seen[T - 1] == (T - 1, True, main, 1)                                 # the last segment
    assert seen[T:] == [(t, True, "amrb-replay", 1) for t in range(T - 2, -1, -1)]
    assert torch.get_num_threads() == 2


def test_overlapped_replays_need_two_threads_and_amrb():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="rmaat", retention="none", **SMALL))
    x, y = batch()
    assert torch.get_num_threads() == 1
    with pytest.raises(ConfigError, match="at least 2 intra-op threads.*torch has 1"):
        forward_backward(model, x, y, method="amrb", overlap=True)
    with pytest.raises(ConfigError, match="overlapping replays are AMRB's; method = 'bptt'"):
        forward_backward(model, x, y, method="bptt", overlap=True)


def test_overlapped_replays_are_refused_where_they_cannot_run_as_the_serial_ones(two_threads):
    """Off the CPU, and under torch.autocast, which (like saved-tensor hooks) is per thread and
    would not reach the replay thread; refused before the no-grad pass, whatever T."""
    cell = Cell().double()
    xs = [torch.randn(4, 6, dtype=torch.float64) for _ in range(3)]
    loss = lambda o, i: (o ** 2).mean()   # noqa: E731
    with pytest.raises(ConfigError, match="split CPU threads; the memory is on meta"):
        run_segments(cell, xs, torch.zeros(4, 6, device="meta"), loss, overlap=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(ConfigError, match="do not run under torch.autocast"):
            run_segments(cell, xs, torch.zeros(4, 6, dtype=torch.float64), loss, overlap=True)
    torch.set_num_threads(1)
    with pytest.raises(ConfigError, match="at least 2 intra-op threads"):
        run_segments(cell, xs[:1], torch.zeros(4, 6, dtype=torch.float64), loss, overlap=True)


class FailAt(torch.autograd.Function):
    """Identity whose backward raises for one segment."""

    @staticmethod
    def forward(ctx, x, fail):
        ctx.fail = fail
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        if ctx.fail:
            raise RuntimeError("backward failed on purpose")
        return g, None


@pytest.mark.parametrize("overlap", [False, True], ids=["serial", "overlapped"])
def test_a_backward_that_raises_leaves_the_rng_and_threads_as_the_serial_replays_do(two_threads, overlap):
    """The replay under way finishes before the error reaches the caller, so its fork_rng gives
    the generator back: the next draw is the one after the last segment's forward, and the
    thread count is the caller's."""
    cell = Cell().double()
    xs = [torch.randn(4, 6, dtype=torch.float64) for _ in range(6)]

    def step(i, m):
        out, m = cell(xs[i], m)
        return out, FailAt.apply(m, i == 3)

    torch.manual_seed(11)
    with pytest.raises(RuntimeError, match="failed on purpose"):
        run_segments(step, range(6), torch.zeros(4, 6, dtype=torch.float64), lambda o, i: (o ** 2).mean(),
                     overlap=overlap)
    after = torch.rand(3)
    torch.manual_seed(11)                                  # the draws of the no-grad pass and the last segment
    for i in range(6):
        torch.nn.functional.dropout(xs[i], 0.3)
    assert torch.equal(after, torch.rand(3))
    assert torch.get_num_threads() == 2


def test_overlapped_stats_count_each_phase_once(tmp_path, two_threads):
    """With overlap the replays' forwards run beside the backward: the caller's time is the
    no-grad pass, the last segment's forward, the backward, the waits and the bookkeeping."""
    model = build_model(ModelConfig(arch="rmaat", retention="none", **SMALL))
    x, y = batch(pad_row=False)
    st: dict = {}
    t0 = time.perf_counter()
    forward_backward(model, x, y, method="amrb", stats=st, overlap=True)
    wall = time.perf_counter() - t0
    assert set(st) == {"stored_memory_bytes", "nograd_s", "forward_s", "backward_s", "other_s", "wait_s"}
    assert min(st[k] for k in ("nograd_s", "forward_s", "backward_s", "wait_s", "other_s")) >= 0
    assert st["nograd_s"] + st["backward_s"] + st["wait_s"] + st["other_s"] <= wall
