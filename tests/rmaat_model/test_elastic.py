"""ElasticMemory: write/read known answers, padding, segmentation invariance, gradients, bad input."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from astro_rmaat.errors import ConfigError, DataError
from rmaat_model.amrb import run_segments
from rmaat_model.elastic import ElasticMemory
from rmaat_model.hippo import legs_recurrence, sample_points

from model_fixtures import one_thread  # noqa: F401  (autouse)

F64 = torch.float64


def identity_memory(d: int = 2, **kw) -> ElasticMemory:
    """d_model = d_mem = d with identity write and read maps: the memory tokens are the raw
    reconstruction of the written features."""
    mem = ElasticMemory(d, d, **kw).double()
    with torch.no_grad():
        for lin in (mem.write_proj, mem.read_proj):
            lin.weight.copy_(torch.eye(d))
            lin.bias.zero_()
    return mem


def run(mem: ElasticMemory, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Write h (B, T*N, D) segment by segment; c after the last segment."""
    N = mem.segment_len
    mask = torch.ones(h.shape[:2], dtype=torch.bool) if mask is None else mask
    c = mem.initial_state(h.shape[0], h.dtype)
    for t in range(h.shape[1] // N):
        c = mem.write(c, h[:, t * N:(t + 1) * N], t, mask[:, t * N:(t + 1) * N])
    return c


def test_memory_tokens_sample_the_written_history():
    """Known answer through the module: two features, a line and a cubic of the token's position
    in the span, written over 4 segments of 16 tokens (cell midpoints), read as S = 5 memory
    tokens: token s holds both functions at fraction x_s, to the midpoint rule's 50 / L^2. After
    ``sampling = "recent"`` (no retraining, same state dict) the tokens move to the recent points."""
    mem = identity_memory(n_coef=8, n_samples=5, segment_len=16, max_segments=4)
    L = 64
    x = (torch.arange(L, dtype=F64) + 0.5) / L
    fns = [lambda x: 2 * x - 1, lambda x: 1 - 2 * x + 3 * x ** 2 - 4 * x ** 3]
    h = torch.stack([fn(x) for fn in fns], dim=-1)[None]                 # (1, 64, 2)
    c = run(mem, h)
    keys = set(mem.state_dict())
    for mode in ("uniform", "recent"):
        mem.sampling = mode
        xs = sample_points(mode, 5)
        want = torch.stack([fn(xs) for fn in fns], dim=-1)               # (5, 2)
        assert torch.allclose(mem.read(c, 3)[0], want, rtol=0, atol=50 / L ** 2), mode
    assert set(mem.state_dict()) == keys == {"write_proj.weight", "write_proj.bias",
                                             "read_proj.weight", "read_proj.bias"}
    mem.sampling = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert mem.sampling == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert torch.allclose(mem.read(c, 3)[0, 2], torch.stack([fn(torch.tensor(0.5, dtype=F64)) for fn in fns]),
                          atol=50 / L ** 2)


def test_state_equals_the_token_recurrence_and_padding_is_inert():
    """Two sequences, 40 and 48 real tokens of 48 (segments of 16): each state equals the ZOH
    recurrence over its own real tokens only (padding neither adds input nor advances the
    clock); changing the padded hidden states changes nothing, and they get no gradient."""
    mem = identity_memory(d=3, n_coef=6, n_samples=2, segment_len=16, max_segments=3)
    h = torch.randn(2, 48, 3, dtype=F64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    mask = torch.ones(2, 48, dtype=torch.bool)
    mask[0, 40:] = False
    c = run(mem, h, mask)
    for b, n in ((0, 40), (1, 48)):
        ref = legs_recurrence(h[b, :n].detach().T, 6)                    # (3, 6)
        assert torch.allclose(c[b], ref, rtol=0, atol=1e-12)
    c.sum().backward()
    assert not h.grad[0, 40:].any() and h.grad[0, :40].abs().min() > 0
    h2 = h.detach().clone()
    h2[0, 40:] = 1e3
    assert torch.equal(run(mem, h2, mask), c.detach())


def test_state_does_not_depend_on_segmentation_or_the_cache():
    """The same 64 tokens in 8 segments of 8 or 2 segments of 32 give one state (round-off); a
    segment past max_segments (matrices from the closed form at run time) matches the cache."""
    h = torch.randn(3, 64, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 64, dtype=torch.bool)
    mask[1, 50:] = False                                                 # one sequence ends inside
    small = run(identity_memory(n_coef=10, n_samples=3, segment_len=8, max_segments=8), h, mask)
    big = run(identity_memory(n_coef=10, n_samples=3, segment_len=32, max_segments=2), h, mask)
    short_cache = run(identity_memory(n_coef=10, n_samples=3, segment_len=8, max_segments=3), h, mask)
    assert torch.allclose(small, big, rtol=0, atol=1e-12)
    assert torch.allclose(small, short_cache, rtol=0, atol=1e-13)


def test_float32_state_agrees_with_float64():
    """The buffers are float64 and cast at use: a float32 run tracks the float64 one."""
    torch.manual_seed(0)
    mem = ElasticMemory(8, 4, n_coef=16, n_samples=4, segment_len=16, max_segments=8).double()
    h = torch.randn(2, 128, 8, dtype=F64)
    c64 = run(mem, h)
    c32 = run(mem.float(), h.float())
    assert c32.dtype == torch.float32
    assert torch.allclose(c32.double(), c64, rtol=0, atol=1e-5)
    assert torch.allclose(mem.read(c32, 7).double(), mem.double().read(c64, 7), rtol=0, atol=1e-5)


class TwoSegments(torch.nn.Module):
    """Segments 1 and 2 written onto c0 (the state after segment 0), then read: one forward for
    torch.func.functional_call."""

    def __init__(self, mem: ElasticMemory):
        super().__init__()
        self.mem = mem

    def forward(self, c0, h, mask):
        c = self.mem.write(c0, h[:, :4], 1, mask[:, :4])
        return self.mem.read(self.mem.write(c, h[:, 4:], 2, mask[:, 4:]), 2)


def test_gradcheck_through_write_and_read():
    """torch.autograd.gradcheck (float64, tiny sizes) of two writes and a read with respect to
    the incoming state, the hidden states and both linear maps. Segment 1 uses the cached
    matrices; segment 2 lies past max_segments and one sequence ends inside it, so the run-time
    closed form and the per-sequence partial path are differentiated too."""
    torch.manual_seed(0)
    mem = ElasticMemory(3, 2, n_coef=3, n_samples=2, sampling="recent", segment_len=4, max_segments=2).double()
    chain = TwoSegments(mem)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 6:] = False
    names = [k for k, _ in chain.named_parameters()]

    def fn(c0, h, *weights):
        return functional_call(chain, dict(zip(names, weights)), (c0, h, mask))

    c0 = torch.randn(2, 2, 3, dtype=F64, requires_grad=True)
    h = torch.randn(2, 8, 3, dtype=F64, requires_grad=True)
    weights = [p.detach().clone().requires_grad_(True) for p in chain.parameters()]
    assert torch.autograd.gradcheck(fn, (c0, h, *weights))


@pytest.mark.parametrize("loss_on", ["last", "every"])
def test_amrb_replay_of_the_state_gives_bptt_gradients(loss_on):
    """c is the single tensor AMRB carries: a toy recurrence (memory tokens of segment t feed a
    tanh layer whose output is written, as a model's blocks would) trained through
    ``amrb.run_segments`` gets BPTT's parameter gradients to round-off, padding included."""
    torch.manual_seed(0)
    mem = ElasticMemory(4, 3, n_coef=5, n_samples=2, segment_len=4, max_segments=4).double()
    mix = torch.nn.Linear(4, 4).double()
    x = torch.randn(2, 16, 4, dtype=F64)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 10:] = False

    def step(t, c):
        m = mem.read(c, t - 1).mean(dim=1, keepdim=True) if t else 0.0   # (B, 1, D) or nothing yet
        h = torch.tanh(mix(x[:, 4 * t:4 * t + 4] + m))
        c = mem.write(c, h, t, mask[:, 4 * t:4 * t + 4])
        return mem.read(c, t), c

    def grads(method):
        for p in [*mem.parameters(), *mix.parameters()]:
            p.grad = None
        run_segments(step, range(4), mem.initial_state(2, F64), lambda out, i: (out ** 2).sum(),
                     method=method, loss_on=loss_on)
        return [p.grad.clone() for p in [*mem.parameters(), *mix.parameters()]]

    for a, b in zip(grads("bptt"), grads("amrb")):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
        assert a.abs().max() > 0


def test_bad_configuration_and_bad_tensors():
    ok = dict(d_model=4, d_mem=2, n_coef=3, n_samples=2, segment_len=4, max_segments=2)
    for change, msg in [(dict(n_coef=0), "n_coef = 0"), (dict(n_samples=0), "n_samples = 0"),
                        (dict(d_mem=True), "d_mem = True"), (dict(sampling="middle"), "sampling = 'middle'"),
                        (dict(sampling=[0.1, 1.2]), "fraction 1.2 is outside"),
                        (dict(sampling=[0.5]), "lists 1 fractions but n_samples = 2")]:
        with pytest.raises(ConfigError, match=msg):
            ElasticMemory(**{**ok, **change})
    mem = ElasticMemory(**ok)
    with pytest.raises(ConfigError, match="fraction -0.5"):
        mem.sampling = [-0.5, 0.5]
    assert mem.sampling == "uniform"                                     # unchanged by the failed set
    c = mem.initial_state(2)
    h = torch.zeros(2, 4, 4)
    with pytest.raises(DataError, match="padding before a real token"):
        mem.write(c, h, 0, torch.tensor([[True, False, True, True], [True] * 4]))
    with pytest.raises(DataError, match="h must be"):
        mem.write(c, torch.zeros(2, 3, 4), 0, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(DataError, match="state"):
        mem.read(torch.zeros(2, 3, 3), 0)
    with pytest.raises(DataError, match="segment index t = -1"):
        mem.read(c, -1)
    with torch.no_grad():                                                # no history: the bias alone
        assert torch.equal(mem.read(c, 0), mem.read_proj.bias.expand(2, 2, 4))
