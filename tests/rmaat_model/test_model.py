"""RMAAT and its baselines: the attention formulas, padding, retention modes, bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from astro_rmaat import config as cfgio
from astro_rmaat.errors import ConfigError, DataError
from rmaat_model.kernels import astro_attention, astro_map, phi
from rmaat_model.model import build_model
from rmaat_model.model_config import ARCHS, MEMORY_ARCHS, ModelConfig

from model_fixtures import one_thread  # noqa: F401  (autouse)
from model_fixtures import rf_closed_form, rf_stream_closed_form, write_retention

SMALL = dict(vocab_size=20, n_classes=3, max_len=160, d_model=16, n_heads=2, n_layers=2, d_ff=32,
             segment_len=16, n_mem=3, dropout=0.1)


@pytest.fixture
def rfile(tmp_path):
    return str(write_retention(tmp_path / "retention.json"))


def make(arch="rmaat", rfile=None, **kw):
    cfg = ModelConfig(arch=arch, **{**SMALL, "retention": "ltp" if rfile else "none",
                                    "retention_file": rfile, **kw})
    torch.manual_seed(0)
    return build_model(cfg)


# --------------------------------------------------------------------------- attention
def direct_astromorphic(q, k, v, mask, phi_r, alpha):
    """The same formulas, one query at a time, with explicit sums over keys (O(W^2))."""
    B, nh, W, hs = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(nh):
            real = [j for j in range(W) if mask[b, j]]
            g = sum(phi(k[b, h, j]) for j in real) ** alpha
            for i in range(W):
                fq = phi(q[b, h, i])
                num = sum((fq @ phi(k[b, h, j])) * v[b, h, j] for j in real) / hs
                if phi_r is not None:
                    num = num + sum((fq @ phi_r[j]) * v[b, h, j] for j in real) / hs
                out[b, h, i] = num / (fq @ g)
    return out


def random_qkv(W=7, hs=4, B=2, nh=2):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(B, nh, W, hs, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(B, W, dtype=torch.bool)
    mask[1, 5:] = False                     # second sequence padded
    return q, k, v, mask


def test_astromorphic_attention_equals_direct_quadratic_evaluation():
    q, k, v, mask = random_qkv()
    phi_r = astro_map(10, 4, 8.0).double()[:7]
    fast = astro_attention(q, k, v, mask, phi_r, 0.25)
    slow = direct_astromorphic(q, k, v, mask, phi_r, 0.25)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    # padded keys do not enter: changing them leaves every output unchanged
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 5:] += 3.0; v2[1, :, 5:] -= 2.0
    torch.testing.assert_close(astro_attention(q, k2, v2, mask, phi_r, 0.25), fast, rtol=0, atol=0)


def test_alpha_one_without_astro_is_normalised_linear_attention():
    q, k, v, mask = random_qkv()
    out = astro_attention(q, k, v, mask, None, 1.0)
    m = q.shape[-1]
    fq, fk = phi(q), phi(k) * mask[:, None, :, None]
    A = fq @ fk.transpose(-2, -1)                        # (B, nh, W, W) non-negative scores
    ref = (A / A.sum(-1, keepdim=True)) @ v              # row-normalised linear attention
    torch.testing.assert_close(out * m, ref, rtol=1e-12, atol=1e-12)   # the paper's constant 1/m


def test_astro_map_decays_with_distance_from_each_process():
    r = astro_map(32, 4, 8.0) - 1.0                      # phi(r) - 1 = r for r > 0
    centres = [(j + 0.5) / 4 * 32 for j in range(4)]
    for j, c in enumerate(centres):
        near, far = int(c), (int(c) + 16) % 32
        assert r[near, j] > 0.5 > r[far, j]


def test_astromorphic_cost_is_linear_in_window():
    from torch.utils.flop_counter import FlopCounterMode

    def flops(fn, W):
        x = torch.randn(1, 2, W, 8, requires_grad=True)
        mask = torch.ones(1, W, dtype=torch.bool)
        mask[0, -1] = False
        with FlopCounterMode(display=False) as counter:
            fn(x, x * 1.0, x * 2.0, mask).sum().backward()
        return counter.get_total_flops()
    astro = lambda q, k, v, m: astro_attention(q, k, v, m, astro_map(W_CAP, 8, 8.0)[:q.shape[2]], 0.25)
    f = [flops(astro, W) for W in (256, 512, 1024)]
    assert f[1] / f[0] == pytest.approx(2.0, rel=0.01) and f[2] / f[1] == pytest.approx(2.0, rel=0.01)


W_CAP = 1024


# --------------------------------------------------------------------------- padding
@pytest.mark.parametrize("arch, kw", [(a, {}) for a in ARCHS] + [("at", {"at_scope": "segment"})],
                         ids=[*ARCHS, "at-segment"])
def test_appending_padding_does_not_change_logits(arch, kw, rfile):
    model = make(arch, rfile if arch == "rmaat" else None, **kw).eval()
    g = torch.Generator().manual_seed(2)
    short = torch.randint(1, 20, (1, 37), generator=g)        # 3 segments, the last one padded
    long_ = torch.randint(1, 20, (1, 150), generator=g)       # 10 segments
    alone = model(short)
    extra = model(torch.cat([short, torch.zeros(1, 80, dtype=torch.long)], 1))
    batched = model(torch.cat([torch.cat([short, torch.zeros(1, 113, dtype=torch.long)], 1), long_]))
    torch.testing.assert_close(extra, alone, rtol=0, atol=0)
    torch.testing.assert_close(batched[:1], alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched[1:], model(long_), rtol=1e-5, atol=1e-6)


def test_matching_head_is_two_shared_towers(rfile):
    model = make("rmaat", rfile, head="match").eval()
    g = torch.Generator().manual_seed(3)
    a, b = torch.randint(1, 20, (2, 40), generator=g), torch.randint(1, 20, (2, 90), generator=g)
    logits = model(a, b)
    # each tower's features equal those of the document encoded on its own
    plan = model.plan(a, b)
    state = model.initial_memory(plan)
    for t in range(plan.n_segments):
        state = model.step(plan, t, state)
    f = model.features(plan, state)

    def alone(x):
        cfg1 = dataclasses.replace(model.cfg, head="cls")
        one = build_model(cfg1, rf_table=model.rf_table)
        one.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head.")},
                            strict=False)
        one.eval()
        p = one.plan(x)
        s = one.initial_memory(p)
        for t in range(p.n_segments):
            s = one.step(p, t, s)
        return one.features(p, s)
    torch.testing.assert_close(f[:2], alone(a), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f[2:], alone(b), rtol=1e-5, atol=1e-6)
    u, v = f[:2], f[2:]
    torch.testing.assert_close(logits, model.head(torch.cat([u, v, u * v, u - v], -1)))


def test_baselines_have_the_same_sizes():
    shapes = {arch: {k: tuple(v.shape) for k, v in make(arch).state_dict().items()} for arch in ARCHS}
    assert shapes["rmaat"] == shapes["rmt"] == shapes["rlt"]
    assert shapes["transformer"] == shapes["at"]
    body = lambda s: {k: v for k, v in s.items() if k.startswith("blocks.")}
    assert body(shapes["rmaat"]) == body(shapes["transformer"])
    # segment-local AT: RMAAT less its initial memory and retention table
    seg = {k: tuple(v.shape) for k, v in make("at", at_scope="segment").state_dict().items()}
    assert seg == {k: v for k, v in shapes["rmaat"].items() if k not in ("mem_init", "rf_table")}


def test_segment_local_at_sees_only_the_last_real_segment():
    """No memory, nothing passed between segments: the logits are those of the last real
    segment encoded alone, and no token before it can move them."""
    model = make("at", at_scope="segment").eval()
    g = torch.Generator().manual_seed(7)
    x = torch.randint(1, 20, (3, 150), generator=g)
    x[0, 37:] = 0                                             # T_b = 3, last segment half padded
    x[1, 64:] = 0                                             # T_b = 4, last segment full
    logits = model(x)
    for b, (start, end) in enumerate([(32, 37), (48, 64), (144, 150)]):
        torch.testing.assert_close(logits[b], model(x[b:b + 1, start:end])[0], rtol=1e-5, atol=1e-6)
    y = x.clone()
    y[0, :32] = torch.randint(1, 20, (32,), generator=g)       # every earlier segment rewritten
    y[1, :48] = torch.randint(1, 20, (48,), generator=g)
    y[2, :144] = torch.randint(1, 20, (144,), generator=g)
    torch.testing.assert_close(model(y), logits, rtol=0, atol=0)
    last = ([0, 1, 2], [36, 63, 149])                        # the last real segment does count
    y[last] = y[last] % 19 + 1                                # ids 1..19: each one changes
    assert not torch.allclose(model(y), logits)
    whole = make("at").eval()                                 # the paper's AT sees earlier segments
    z = x.clone(); z[2, :144] = y[2, :144]
    assert not torch.allclose(whole(z)[2], whole(x)[2])


# --------------------------------------------------------------------------- retention
def test_retention_scales_follow_the_fixture_schedule(tmp_path, rfile):
    g = torch.Generator().manual_seed(4)
    x = torch.randint(1, 20, (2, 100), generator=g)
    x[0, 40:] = 0                                             # T = 3 and T = 7 in one batch
    ltp, stream, none = (make("rmaat", rfile, retention=r, retention_reading="literal")
                         for r in ("ltp", "stream", "none"))
    plan = ltp.plan(x)
    assert plan.n_seg.tolist() == [3, 7]
    for t in range(1, 7):
        want = [rf_closed_form(t, 3) if t <= 3 else 0.0, rf_closed_form(t, 7)]
        torch.testing.assert_close(ltp.retention_scale(plan, t), torch.tensor(want), rtol=1e-6, atol=0)
        stream_want = torch.tensor([rf_stream_closed_form(t)] * 2)
        torch.testing.assert_close(stream.retention_scale(plan, t), stream_want, rtol=1e-6, atol=0)
        assert none.retention_scale(plan, t).tolist() == [1.0, 1.0]
    # the ltp model differs from the unscaled one only by RF(t, T) on the incoming memory
    ltp.eval(); none.eval()
    none.load_state_dict(ltp.state_dict() | {"rf_table": none.rf_table})
    state = ltp.initial_memory(plan)
    for t in range(4):
        state = ltp.step(plan, t, state)
    scale = ltp.retention_scale(plan, 4)[:, None, None]
    ours = ltp.step(plan, 4, state)[1]                        # row 0 has ended (T = 3): no update
    torch.testing.assert_close(ours, none.step(plan, 4, state * scale)[1])
    assert not torch.allclose(ours, none.step(plan, 4, state)[1])


def test_reversed_schedule_hands_on_the_ltp_values_back_to_front(rfile):
    """retention = "reversed": RF(T-t, T) at hand-off t < T, from the same retention.json (the
    exponential curve's closed form). A sequence of T segments applies RF(1..T-1, T) (its last
    segment's output is read unscaled): reversed applies exactly ltp's values in reverse order,
    so it rises where ltp falls with the same applied sum; RF(T, T) stays in place (the row
    still sums to 1) and the cells past T stay at zero."""
    rev = make("rmaat", rfile, retention="reversed").rf_table.double()
    ltp = make("rmaat", rfile).rf_table.double()
    Tc = rev.shape[0]
    for T in (1, 2, 5, Tc):
        want = torch.tensor([rf_closed_form(T - t, T) for t in range(1, T)] + [rf_closed_form(T, T)],
                            dtype=torch.float64)
        torch.testing.assert_close(rev[T - 1, :T], want, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(rev[T - 1, :T - 1], ltp[T - 1, :T - 1].flip(0))
        assert float(rev[T - 1, :T - 1].sum()) == pytest.approx(float(ltp[T - 1, :T - 1].sum()), abs=1e-6)
        assert float(rev[T - 1, :T].sum()) == pytest.approx(1.0, abs=1e-6)
        assert float(rev[T - 1, T:].abs().sum()) == 0
    assert bool((rev[Tc - 1, 1:Tc - 1] > rev[Tc - 1, :Tc - 2]).all())   # rising over the applied hand-offs
    with pytest.raises(ConfigError, match="reversed"):                  # named among the choices
        ModelConfig(retention="nope")


@pytest.mark.parametrize("mode", ["ltp", "stream", "flat", "reversed", "learned"])
def test_integrating_reading_moves_the_memory_by_rf_towards_each_write(rfile, mode):
    """mem_{t+1} = mem_t + RF(t, T) (mem'_{t+1} - mem_t) for every segment but a sequence's last,
    whose memory output is read out unscaled; mem' is what the unscaled model writes."""
    g = torch.Generator().manual_seed(4)
    x = torch.randint(1, 20, (2, 100), generator=g)
    x[0, 40:] = 0                                             # T = 3 and T = 7 in one batch
    integ = make("rmaat", rfile, retention=mode, retention_reading="integrating").eval()
    none = make("rmaat", rfile, retention="none").eval()
    none.load_state_dict(integ.state_dict() | {"rf_table": none.rf_table})
    plan = integ.plan(x)
    table = integ.rf_table.detach()
    if mode == "flat":                                        # RF = 1/T: no file, same capacity
        torch.testing.assert_close(table[6, :7], torch.full((7,), 1 / 7, dtype=torch.float32))
        assert float(table[2, :3].sum()) == pytest.approx(1.0) and float(table[2, 3:].abs().sum()) == 0
    state = integ.initial_memory(plan)
    for t in range(plan.n_segments):
        written = none.step(plan, t, state)                   # mem'_{t+1} from mem_t
        rf = table[plan.n_seg - 1, t][:, None, None]
        last = (t == plan.n_seg - 1)[:, None, None]
        want = torch.where(last, written, state + rf * (written - state))
        want = torch.where((t < plan.n_seg)[:, None, None], want, state)
        new = integ.step(plan, t, state)
        torch.testing.assert_close(new, want, rtol=1e-6, atol=1e-6)
        state = new


def run_states(model, x):
    plan = model.plan(x)
    state, states = model.initial_memory(plan), []
    for t in range(plan.n_segments):
        state = model.step(plan, t, state)
        states.append(state)
    return states


@pytest.mark.parametrize("reading", ["literal", "integrating"])
@pytest.mark.parametrize("mode, prefix_stable", [("stream", True), ("none", True), ("ltp", False)])
def test_stream_needs_no_T(rfile, mode, prefix_stable, reading):
    model = make("rmaat", rfile, retention=mode, retention_reading=reading).eval()
    g = torch.Generator().manual_seed(5)
    long_ = torch.randint(1, 20, (1, 128), generator=g)       # 8 segments
    short = long_[:, :48]                                     # its first 3 segments
    # the memory after segment 2 of 3 (not the short sequence's last, which is read out as is)
    a, b = run_states(model, short)[1], run_states(model, long_)[1]
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-7) == prefix_stable


def test_learned_retention_is_a_parameter_with_its_own_group(rfile):
    model = make("rmaat", rfile, retention="learned")
    ltp = make("rmaat", rfile, retention="ltp")
    assert isinstance(model.rf_table, torch.nn.Parameter)
    torch.testing.assert_close(model.rf_table.detach(), ltp.rf_table)
    assert model.retention_parameters() == [model.rf_table] and ltp.retention_parameters() == []
    groups = model.param_groups(lr=1e-3, weight_decay=0.1, retention_lr=1e-2)
    ret = [gr for gr in groups if any(p is model.rf_table for p in gr["params"])]
    assert len(ret) == 1 and ret[0]["lr"] == 1e-2 and ret[0]["weight_decay"] == 0.0 and len(ret[0]["params"]) == 1
    n = sum(len(gr["params"]) for gr in groups)
    assert n == len(list(model.parameters()))
    x = torch.randint(1, 20, (2, 70))
    model(x).sum().backward()
    assert model.rf_table.grad[4, :4].abs().min() > 0        # RF(t, T=5) for t = 1..4 learn
    assert model.rf_table.grad[4, 4:].abs().max() == 0


# --------------------------------------------------------------------------- bad input
def test_sequence_longer_than_max_len(rfile):
    model = make("rmaat", rfile)
    with pytest.raises(DataError, match=r"161 tokens .* max_len = 160"):
        model(torch.ones(1, 161, dtype=torch.long))
    model(torch.cat([torch.ones(1, 160, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long)], 1))


def test_retention_file_that_does_not_validate(tmp_path):
    bad = write_retention(tmp_path / "bad.json")
    doc = json.loads(bad.read_text()); doc["curve"]["p"] = doc["curve"]["p"][::-1]
    bad.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="bad.json.*monotone"):
        make("rmaat", str(bad))
    short = write_retention(tmp_path / "short.json", K=4)
    with pytest.raises(ConfigError, match=r"tabulates 4 cycles .* T = .* = 10"):
        make("rmaat", str(short))
    with pytest.raises(DataError, match="does not exist"):
        make("rmaat", str(tmp_path / "missing.json"))


def test_unknown_arch_and_memory_without_memory_tokens():
    with pytest.raises(ConfigError, match="arch = 'gpt'.*expected one of"):
        ModelConfig(arch="gpt")
    with pytest.raises(ConfigError, match="arch = 'gpt'"):
        cfgio.from_dict(ModelConfig, {"arch": "gpt"})
    for arch in MEMORY_ARCHS:
        with pytest.raises(ConfigError, match=f"n_mem = 0: arch '{arch}'"):
            ModelConfig(arch=arch, n_mem=0)
    ModelConfig(arch="transformer", n_mem=0)                 # no memory, nothing to complain about
    ModelConfig(arch="at", at_scope="segment", n_mem=0)      # segment-local AT has no memory either
    with pytest.raises(ConfigError, match="at_scope = 'window'.*expected one of"):
        ModelConfig(arch="at", at_scope="window")
    with pytest.raises(ConfigError, match="retention_range = 'positive': expected one of 'unit', 'free'"):
        ModelConfig(retention="learned", retention_range="positive")
    for arch in ("rmaat", "rmt", "rlt", "transformer"):
        with pytest.raises(ConfigError, match=f"at_scope = 'segment' applies to arch 'at' only; arch '{arch}'"):
            ModelConfig(arch=arch, at_scope="segment")
    with pytest.raises(ConfigError, match="pool = 'mem' needs memory tokens"):
        ModelConfig(arch="at", at_scope="segment", pool="mem")
    with pytest.raises(ConfigError, match="n_astro = 8.*head size .* = 16"):
        ModelConfig(n_astro=8)
    with pytest.raises(ConfigError, match="not divisible"):
        ModelConfig(d_model=30, n_heads=4)


def test_bad_batches_are_named():
    model = make("transformer")
    with pytest.raises(DataError, match="only padding"):
        model(torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(DataError, match="token id 25 .* vocabulary"):
        model(torch.full((1, 4), 25))
    with pytest.raises(DataError, match="tokens2 was given"):
        model(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(DataError, match="needs a second document"):
        make("transformer", head="match")(torch.ones(1, 4, dtype=torch.long))


@pytest.mark.parametrize("arch", [a for a in MEMORY_ARCHS if a != "elastic"])   # elastic writes every row
def test_last_block_computing_only_memory_rows_changes_nothing(arch, rfile):
    """step() skips the segment rows of the last block as queries; running every row gives
    the same memory (they are never read)."""
    model = make(arch, rfile if arch == "rmaat" else None, retention_reading="literal").eval()
    x = torch.randint(1, 20, (2, 60), generator=torch.Generator().manual_seed(6))
    x[0, 20:] = 0
    plan, N, M = model.plan(x), model.cfg.segment_len, model.cfg.n_mem
    state = model.initial_memory(plan)
    for t in range(plan.n_segments):
        new = model.step(plan, t, state)
        seg, seg_mask = plan.tokens[:, t * N:(t + 1) * N], plan.key_mask[:, t * N:(t + 1) * N]
        mem = state if t == 0 else state * model.retention_scale(plan, t)[:, None, None]
        h = torch.cat([mem, model.tok_emb(seg) + model.pos_emb], 1)
        key_mask = torch.cat([seg_mask.new_ones(2, M), seg_mask], 1)
        for block in model.blocks:
            h = block(h, key_mask, False)
        torch.testing.assert_close(new, torch.where((t < plan.n_seg)[:, None, None], h[:, :M], state))
        state = new


@pytest.mark.parametrize("reading", ["literal", "integrating"])
def test_finished_sequences_are_not_computed_and_nothing_changes(reading, rfile):
    """Segment t runs on the sequences with t < T_b only: block 0 sees 3, 3, 3, then 2 rows for
    T_b = (3, 8, 8); the logits and the gradients equal those of each sequence alone."""
    model = make("rmaat", rfile, retention_reading=reading, dropout=0.0)
    g = torch.Generator().manual_seed(4)
    x = torch.randint(1, 20, (3, 128), generator=g)
    x[0, 40:] = 0                                                   # T_b = 3 of 8
    seen = []
    hook = model.blocks[0].register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    logits = model(x)
    hook.remove()
    assert model.plan(x).n_seg.tolist() == [3, 8, 8] and seen == [3, 3, 3] + [2] * 5
    for b in range(3):
        model.zero_grad()
        alone = model(x[b:b + 1, :40] if b == 0 else x[b:b + 1])
        torch.testing.assert_close(logits[b:b + 1], alone, rtol=1e-5, atol=1e-6)
        alone.square().sum().backward()
        want = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        model(x)[b].square().sum().backward()
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.grad, want[n], rtol=1e-4, atol=1e-6, msg=n)


# --------------------------------------------------------------------------- dropout
def test_dropout_masks_keep_at_rate_with_unbiased_scale_and_replay_from_rng_state():
    from rmaat_model.kernels import dropout_masks, mask_rows

    like = torch.zeros(())
    rows = mask_rows(2, 40, 32, 8)                       # embeddings 32 rows, last block 8 rows
    assert rows == (32, 40, 40, 8, 8)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    masks = dropout_masks(rows, 3, 64, 0.1, like, True)
    assert [tuple(m.shape) for m in masks] == [(3, r, 64) for r in rows]
    # the sites tile the one draw, each its own consecutive piece (no overlap, no gap)
    starts = [m.storage_offset() for m in masks]
    assert starts == [sum(3 * r * 64 for r in rows[:i]) for i in range(len(rows))]
    assert all(m.is_contiguous() for m in masks) and not torch.equal(masks[1], masks[2])
    flat = torch.cat([m.flatten() for m in masks])
    scale = 65536 / (65536 - round(0.1 * 65536))
    values = flat.unique().tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(scale)]
    kept = (flat > 0).double().mean().item()
    sd = (0.9 * 0.1 / flat.numel()) ** 0.5
    assert abs(kept - (1 - 6554 / 65536)) < 5 * sd       # rate within 5 standard deviations
    torch.set_rng_state(state)                           # AMRB's replay: same state, same masks
    again = dropout_masks(rows, 3, 64, 0.1, like, True)
    assert all(torch.equal(a, b) for a, b in zip(masks, again))
    assert dropout_masks(rows, 3, 64, 0.1, like, False) is None
    assert dropout_masks(rows, 3, 64, 0.0, like, True) is None


@pytest.mark.parametrize("dtype,scale", [(torch.bfloat16, 1.109375), (torch.float16, 1.111328125)])
def test_dropout_masks_in_a_narrow_dtype_keep_the_expectation_exact(dtype, scale):
    """1 / 0.9 is not a bfloat16 (or float16) number: the kept value is its rounding, and the
    drop rate is moved to the multiple of 2^-16 that gives E[mask] = 1 (0.098587 in bfloat16,
    where rounding the scale alone would give 0.99844); the threshold is applied on the exact
    16-bit pieces, so the same RNG state gives the float32 draw's pattern at that rate."""
    from rmaat_model.kernels import dropout_masks

    rows = (40, 40)
    torch.manual_seed(9)
    state = torch.get_rng_state()
    masks = dropout_masks(rows, 64, 64, 0.1, torch.zeros((), dtype=dtype), True)
    flat = torch.cat([m.flatten() for m in masks])
    assert flat.dtype == dtype and flat.unique().tolist() == [0.0, scale]
    q = round(65536 - 65536 / scale)                             # dropped 16-bit values
    assert abs((65536 - q) / 65536 * scale - 1) < 2 ** -16        # E[mask] = 1 to the rate's grid
    kept = (flat > 0).double().mean().item()
    sd = (q / 65536 * (1 - q / 65536) / flat.numel()) ** 0.5
    assert abs(kept - (1 - q / 65536)) < 5 * sd
    assert abs(flat.double().mean().item() - 1) < 5 * sd * scale
    # the same pieces as the float32 draw, thresholded at q instead of round(0.1 * 65536)
    torch.set_rng_state(state)
    wide = torch.cat([m.flatten() for m in dropout_masks(rows, 64, 64, 0.1, torch.zeros(()), True)])
    torch.set_rng_state(state)
    bits = torch.empty((flat.numel() + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)
    pieces = bits.view(torch.int16)[:flat.numel()].int()
    assert torch.equal(flat > 0, pieces >= q - 32768)
    assert torch.equal(wide > 0, pieces >= round(0.1 * 65536) - 32768)
