"""The optimiser's loops in C++ (csrc/fused_block.cpp: ``adamw_step``, ``sum_grads``) give
torch's bits: ``rmaat_model.optim.AdamW`` steps a model exactly as ``torch.optim.AdamW``
does (its parameters, moments and step counts, through a learning-rate schedule, skipped
gradients and two threads), its state dict is torch's, and whatever the loop does not compute
as torch does runs torch's own step. The batch shards' gradient sums are the Python loop's."""

from __future__ import annotations

import copy

import pytest
import torch

from rmaat_model import native, optim, shards
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig
from rmaat_model.train_config import TrainConfig

from model_fixtures import one_thread, same_bits  # noqa: F401  (one_thread: autouse)

#: sizes with a vector body and a scalar tail, one element, and one above ATen's grain (32768),
#: which two threads split
SHAPES = [(64,), (192, 64), (31,), (1,), (7, 5), (40001,)]


@pytest.fixture(scope="module")
def ext():
    module = native.extension()
    assert module is not None, native.status()
    return module


def params(g: torch.Generator, dtype=torch.float32, transposed: bool = False) -> list[torch.nn.Parameter]:
    """One parameter of each of SHAPES; ``transposed``: the 2-D ones a transposed view (not
    contiguous; their moments, made alike, are not either)."""
    def one(s):
        if transposed and len(s) == 2:
            return torch.randn(s[::-1], generator=g, dtype=dtype).t()
        return torch.randn(s, generator=g, dtype=dtype)
    return [torch.nn.Parameter(one(s)) for s in SHAPES]


def groups(ps: list[torch.nn.Parameter]) -> list[dict]:
    """Two groups as RMAAT.param_groups makes them: with weight decay, and without."""
    return [{"params": ps[::2], "weight_decay": 0.05}, {"params": ps[1::2], "weight_decay": 0.0}]


def grads(step: int, shapes, g: torch.Generator, dtype=torch.float32) -> list[torch.Tensor | None]:
    """Gradients of every scale, zeros among them; every third step one parameter has none."""
    out = []
    for k, s in enumerate(shapes):
        x = torch.randn(s, generator=g, dtype=dtype) * 10.0 ** (k % 5 - 3)
        x[..., ::9] = 0
        out.append(None if step % 3 == 1 and k == step % len(shapes) else x)
    return out


def run_both(ours_cls, kw: dict, steps: int, dtype=torch.float32, transposed: bool = False):
    """The same parameters and gradients through torch's AdamW and ``ours_cls``, each under a
    warm-up schedule: (torch's, ours), each (parameters, optimiser)."""
    g = torch.Generator().manual_seed(11)
    pa = params(g, dtype, transposed)
    pb = copy.deepcopy(pa)
    oa = torch.optim.AdamW(groups(pa), **kw)
    ob = ours_cls(groups(pb), **kw)
    sa, sb = (torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / 20)) for o in (oa, ob))
    for step in range(steps):
        for a, b, x in zip(pa, pb, grads(step, SHAPES, g, dtype)):
            a.grad = None if x is None else x.clone().as_strided(a.shape, a.stride())
            b.grad = None if x is None else x.clone().as_strided(b.shape, b.stride())
        oa.step()
        ob.step()
        sa.step()
        sb.step()
    return (pa, oa), (pb, ob)


def assert_same_state(oa: torch.optim.Optimizer, ob: torch.optim.Optimizer) -> None:
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for k, state in sa["state"].items():
        assert state.keys() == sb["state"][k].keys()
        for name, value in state.items():
            assert same_bits(value, sb["state"][k][name]), (k, name)


class Recording:
    """The extension, each call of its functions recorded in ``calls``: (name, arguments, answer)."""

    def __init__(self, ext):
        self.ext, self.calls = ext, []

    def __getattr__(self, name):
        fn = getattr(self.ext, name)

        def call(*args):
            self.calls.append((name, args, fn(*args)))
            return self.calls[-1][2]
        return call


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("betas", [(0.9, 0.98), (0.6, 0.999)])
def test_adamw_is_torchs_adamw_to_the_bit(ext, threads, betas):
    """200 steps, two groups, skipped gradients, a changing learning rate: every parameter,
    moment and step count bitwise torch's, the C++ step having run (not torch's fallback)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    recording = Recording(ext)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(native, "extension", lambda: recording)
            (pa, oa), (pb, ob) = run_both(optim.AdamW, dict(lr=3e-3, betas=betas, eps=1e-8), 200)
        assert torch.get_num_threads() == threads   # the square roots' one-thread scope gave it back
    finally:
        torch.set_num_threads(saved)
    # one call a step for both groups, each taken
    assert [(name, len(args[0]), taken) for name, args, taken in recording.calls] == [("adamw_step", 2, True)] * 200
    for a, b in zip(pa, pb):
        assert same_bits(a.detach(), b.detach())
    assert_same_state(oa, ob)
    start = params(torch.Generator().manual_seed(11))
    unmoved = [s.shape for a, s in zip(pa, start) if torch.equal(a.detach(), s)]
    assert unmoved == [(1,)]   # its gradient always 0 (every ninth value is), in the group without decay


def test_a_state_dict_moves_between_torchs_adamw_and_ours_and_the_steps_go_on_alike():
    """A checkpoint of either loads into the other (the same state layout): ten more steps from
    it give the same bits in both directions."""
    kw = dict(lr=1e-3, betas=(0.9, 0.98), eps=1e-8)
    (pa, oa), (pb, ob) = run_both(optim.AdamW, kw, 30)
    g = torch.Generator().manual_seed(2)
    for src_p, src_o, dst_cls in ((pa, oa, optim.AdamW), (pb, ob, torch.optim.AdamW)):
        p1, p2 = copy.deepcopy(src_p), copy.deepcopy(src_p)
        o1 = type(src_o)(groups(p1), **kw)
        o2 = dst_cls(groups(p2), **kw)
        o1.load_state_dict(copy.deepcopy(src_o.state_dict()))   # (load_state_dict keeps the tensors given)
        o2.load_state_dict(copy.deepcopy(src_o.state_dict()))
        for step in range(10):
            for a, b, x in zip(p1, p2, grads(step, SHAPES, g)):
                a.grad = None if x is None else x.clone()
                b.grad = None if x is None else x.clone()
            o1.step()
            o2.step()
        for a, b in zip(p1, p2):
            assert same_bits(a.detach(), b.detach())
        assert_same_state(o1, o2)


@pytest.mark.parametrize("case,asked", [("amsgrad", False), ("maximize", False), ("no-extension", False),
                                        ("float64", True), ("non-contiguous", True), ("beta1-under-half", True)])
def test_what_the_loop_does_not_compute_runs_torchs_step(case, asked, monkeypatch):
    """Each of these steps through torch's own code and so gives torch's bits: options the
    loop does not have are not offered to it; tensors or a beta1 it does not take, it declines
    (changing nothing) and torch's step runs."""
    kw = dict(lr=1e-3, betas=(0.9, 0.98), eps=1e-8)
    dtype = torch.float64 if case == "float64" else torch.float32
    kw.update({"amsgrad": dict(amsgrad=True), "maximize": dict(maximize=True),
               "beta1-under-half": dict(betas=(0.3, 0.98))}.get(case, {}))
    recording = Recording(native.extension())
    monkeypatch.setattr(native, "extension", (lambda: None) if case == "no-extension" else (lambda: recording))
    (pa, oa), (pb, ob) = run_both(optim.AdamW, kw, 12, dtype, transposed=case == "non-contiguous")
    assert [(name, taken) for name, _, taken in recording.calls] == ([("adamw_step", False)] * 12 if asked else [])
    for a, b in zip(pa, pb):
        assert same_bits(a.detach(), b.detach())
    assert_same_state(oa, ob)


def test_parameters_off_the_cpu_do_not_even_load_the_extension(monkeypatch):
    """A group whose parameters lie elsewhere (here the meta device, as a GPU's would) steps
    through torch's code without asking for the extension, which a first use would build."""
    asked = []
    monkeypatch.setattr(native, "extension", lambda: asked.append(1))
    p = torch.nn.Parameter(torch.zeros(3, device="meta"))
    p.grad = torch.ones(3, device="meta")
    opt = optim.AdamW([p])
    opt.step()
    assert asked == [] and int(opt.state[p]["step"]) == 1


@pytest.mark.parametrize("path", ["cpp", "torch"])
def test_make_optimizer_gives_this_adamw_and_a_step_hook_runs_once_per_step(path, monkeypatch):
    """Training's optimiser is this class; hooks on its step (make_optimizer's projection of a
    learned retention table) run once per step, after the C++ step or torch's (also where a
    torch AdamW made before had torch wrap the parent class's step in the same hooks)."""
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    if path == "torch":
        monkeypatch.setattr(native, "extension", lambda: None)
    cfg = ModelConfig(arch="rmaat", vocab_size=12, n_classes=3, max_len=32, d_model=16, n_heads=2, n_layers=1,
                      d_ff=16, segment_len=8, n_mem=2)
    model = build_model(cfg)
    opt, _ = optim.make_optimizer(model, TrainConfig(steps=5))
    assert type(opt) is optim.AdamW
    seen = []
    opt.register_step_pre_hook(lambda o, *_: seen.append("pre"))
    opt.register_step_post_hook(lambda o, *_: seen.append(int(o.state[next(model.parameters())]["step"])))
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
    assert seen == ["pre", 1, "pre", 2, "pre", 3]


def shard_setup(weights, seed: int, missing: bool = False, held: bool = False):
    """A model's parameters (SHAPES) and a replica's per shard, each replica's with gradients
    (``missing``: the last shard gave the first parameter none; ``held``: the model holds
    gradients already); and what ``_sum_grads``' operators make of them, computed apart."""
    g = torch.Generator().manual_seed(seed)
    model = params(g)
    reps = [params(g) for _ in weights]
    for rp in reps:
        for q in rp:
            q.grad = torch.randn(q.shape, generator=g)
    if missing:
        reps[-1][0].grad = None
    for p in model:
        p.grad = torch.randn(p.shape, generator=g) if held else None
    want = []
    for i, p in enumerate(model):
        total = None
        for rp, w in zip(reps, weights):
            if rp[i].grad is not None:
                x = rp[i].grad.clone()
                total = x.mul_(w) if total is None else total.add_(x, alpha=w)
        want.append(total if p.grad is None else p.grad.clone().add_(total))
    return model, reps, want


@pytest.mark.parametrize("held", [False, True], ids=["fresh", "held"])
@pytest.mark.parametrize("weights", [[0.3, 0.7], [0.2, 0.5, 0.3], [0.5, 0.5]])
def test_the_shards_gradient_sums_are_the_python_operators_to_the_bit(ext, weights, held, monkeypatch):
    """The extension's sums (taken: every replica gradient dense float32) give the operators'
    bits, into gradients the model holds or into fresh ones; the replicas' are released."""
    recording = Recording(ext)
    monkeypatch.setattr(native, "extension", lambda: recording)
    model, reps, want = shard_setup(weights, 3, held=held)
    shards._sum_grads(model, reps, weights)
    assert [(name, taken) for name, _, taken in recording.calls] == [("sum_grads", True)]
    assert all(same_bits(p.grad, w) for p, w in zip(model, want))
    assert all(q.grad is None for rp in reps for q in rp)


@pytest.mark.parametrize("held", [False, True], ids=["fresh", "held"])
def test_a_missing_replica_gradient_leaves_it_to_the_python_loop_which_adds_nothing_for_it(ext, held):
    """A shard that gave a parameter no gradient: the extension declines, changing nothing, and
    the Python loop adds nothing for that shard."""
    weights = [0.25, 0.75]
    model, reps, want = shard_setup(weights, 5, missing=True, held=held)
    before = [None if p.grad is None else p.grad.clone() for p in model]
    assert ext.sum_grads(model, reps, weights) is False
    assert all((p.grad is None and b is None) or same_bits(p.grad, b) for p, b in zip(model, before))
    assert reps[0][0].grad is not None
    shards._sum_grads(model, reps, weights)
    assert all(same_bits(p.grad, w) for p, w in zip(model, want))
    assert all(q.grad is None for rp in reps for q in rp)
