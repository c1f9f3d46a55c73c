"""Batch shards (rmaat_model.shards): a step of S shards is the weighted sum of its shards' own
steps, each with its own dropout generator; the numbers follow S, not the threads."""

from __future__ import annotations

import threading

import pytest
import torch

from astro_rmaat.errors import ConfigError, DataError
from rmaat_model import native, shards
from rmaat_model.amrb import forward_backward
from rmaat_model.kernels import drawing_from, dropout_masks
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig

from model_fixtures import one_thread  # noqa: F401  (autouse)
from model_fixtures import write_retention

SMALL = dict(vocab_size=20, n_classes=3, max_len=160, d_model=16, n_heads=2, n_layers=2, d_ff=32,
             segment_len=16, n_mem=3, dropout=0.2)


def ragged(B=7, seed=3):
    """B sequences of 1..8 segments of 16 tokens, one label ignored (F.cross_entropy's -100)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 20, (B, 128), generator=g)
    for b, n in enumerate(torch.randint(5, 129, (B,), generator=g).tolist()):
        x[b, n:] = 0
    y = torch.randint(0, 3, (B,), generator=g)
    y[2] = -100
    return x, y


def model_of(tmp_path, arch="rmaat", retention="ltp", **kw):
    rfile = str(write_retention(tmp_path / "r.json"))
    torch.manual_seed(0)
    return build_model(ModelConfig(arch=arch, retention=retention, retention_file=rfile, **{**SMALL, **kw}))


def step(model, x, y, seed=11, **kw):
    """(loss, logits, {name: grad}, the default generator's state after)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss, logits = forward_backward(model, x, y, **kw)
    return loss, logits, {n: p.grad.clone() for n, p in model.named_parameters()}, torch.get_rng_state()


@pytest.mark.parametrize("arch, retention", [("rmaat", "ltp"), ("rmaat", "learned"), ("rmt", "none"),
                                             ("transformer", "none")])
@pytest.mark.parametrize("method", ["amrb", "bptt"])
def test_a_sharded_step_is_the_weighted_sum_of_its_shards_own_steps(tmp_path, arch, retention, method):
    """Written out by hand: rows dealt by length, one generator per shard seeded from the default
    generator, each shard's forward_backward alone, its gradient weighted by its share of the
    counted labels. The sharded step gives the same bits, and leaves the default generator
    where the seeds' draw leaves it (the shards draw from their own)."""
    model = model_of(tmp_path, arch, retention)
    x, y = ragged()
    loss, logits, got, rng_after = step(model, x, y, method=method, shards=3)

    torch.manual_seed(11)
    seeds = torch.randint(0, 2 ** 62, (3,)).tolist()
    rng_expected = torch.get_rng_state()
    rows = shards.deal(x, None, 0, 3)
    assert sorted(torch.cat(rows).tolist()) == list(range(7))
    count = int(y.ne(-100).sum())
    want, want_loss, want_logits = {}, 0, torch.empty(7, 3)
    for r, seed in zip(rows, seeds):
        w = int(y[r].ne(-100).sum()) / count
        model.zero_grad(set_to_none=True)
        with drawing_from(torch.Generator().manual_seed(seed)):
            l_j, z_j = forward_backward(model, x[r], y[r], method=method)
        want_loss = want_loss + w * l_j
        want_logits[r] = z_j
        for n, p in model.named_parameters():
            want[n] = p.grad * w if n not in want else want[n].add_(p.grad, alpha=w)
    assert torch.equal(loss, want_loss) and torch.equal(logits, want_logits)
    assert got.keys() == want.keys()
    for n in want:
        assert torch.equal(got[n], want[n]), n
    assert torch.equal(rng_after, rng_expected)


@pytest.mark.parametrize("arch, retention", [("rmaat", "ltp"), ("rmaat", "learned"), ("elastic", "none")])
def test_without_dropout_shards_give_the_whole_batch_step(tmp_path, arch, retention):
    """The batch mean splits into the shards' weighted means: with dropout off, two or three
    shards give the unsharded loss, logits and gradients to round-off (float64: 1e-12; the
    learned table's gradient is a sum that cancels, where float32 round-off shows at 1e-5)."""
    model = model_of(tmp_path, arch, retention, dropout=0.0).double()
    x, y = ragged()
    whole = step(model, x, y)
    for S in (2, 3):
        part = step(model, x, y, shards=S)
        torch.testing.assert_close(part[0], whole[0], rtol=1e-12, atol=0)
        torch.testing.assert_close(part[1], whole[1], rtol=1e-12, atol=1e-12)
        for n, g in whole[2].items():
            err = (part[2][n] - g).abs().max() / g.abs().max().clamp_min(1e-30)
            assert err <= 1e-12, f"{S} shards, {n}: relative difference {err:.3g}"


def test_pairs_are_sharded_with_both_documents(tmp_path):
    """The matching head: each shard takes its rows of both documents, and the step is the
    whole batch's to round-off (no dropout, float64)."""
    model = model_of(tmp_path, "rmaat", "none", head="match", dropout=0.0).double()
    x, y = ragged()
    x2, _ = ragged(seed=4)
    x2 = x2[:, :70]
    x2[:, 0] = 1                                                     # no document of padding only
    whole = step(model, x, y, tokens2=x2)
    part = step(model, x, y, tokens2=x2, shards=2)
    torch.testing.assert_close(part[1], whole[1], rtol=1e-12, atol=1e-12)
    for n, g in whole[2].items():
        assert (part[2][n] - g).abs().max() <= 1e-12 * g.abs().max(), n


def test_sharded_amrb_gives_sharded_bptts_gradients_with_dropout(tmp_path):
    """AMRB records and replays each shard's own generator: its gradients are BPTT's with the
    same shards (to the float32 bound of tests/rmaat_model/test_amrb.py), its loss and logits too."""
    model = model_of(tmp_path, "rmaat", "learned")
    x, y = ragged()
    a, b = step(model, x, y, method="amrb", shards=2), step(model, x, y, method="bptt", shards=2)
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-5)
    for n, g in b[2].items():
        assert (a[2][n] - g).abs().max() <= 1e-5 * g.abs().max(), n
    assert torch.equal(a[3], b[3])
    # and dropout is on: another shard count draws other masks
    c = step(model, x, y, method="amrb", shards=3)
    assert not torch.equal(c[1], a[1])


def test_the_numbers_follow_the_shards_not_the_threads(tmp_path, monkeypatch):
    """Two shards on one thread (in turn) and on two (at once): the same bits, and every
    shard ran with one intra-op thread; torch's count is restored."""
    model = model_of(tmp_path)
    x, y = ragged()
    seen = []
    real = shards.drawing_from

    def spy(gen):
        seen.append((threading.current_thread().name.split("_")[0], torch.get_num_threads()))
        return real(gen)

    monkeypatch.setattr(shards, "drawing_from", spy)
    one = step(model, x, y, shards=2, shard_threads=1)
    torch.set_num_threads(2)
    try:
        two = step(model, x, y, shards=2)                       # a thread each, one intra-op thread each
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    assert all(torch.equal(one[2][n], two[2][n]) for n in one[2])
    main = threading.current_thread().name.split("_")[0]
    assert seen[:2] == [(main, 1), (main, 1)]                    # one thread: both shards in turn
    assert sorted(seen[2:]) == sorted([(main, 1), ("rmaat-shard", 1)])


def test_gradients_add_to_those_already_there(tmp_path):
    """As backward does: a second sharded step on the same batch doubles .grad."""
    model = model_of(tmp_path)
    x, y = ragged()
    first = step(model, x, y, shards=2)[2]
    torch.manual_seed(11)
    forward_backward(model, x, y, shards=2)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * first[n], rtol=1e-6, atol=0)


def test_replicas_share_the_weights_and_follow_them(tmp_path):
    """An optimiser step or a loaded state is seen by the replicas at once (same storage); a
    parameter given new storage, or a new buffer, makes new replicas; eval mode is mirrored."""
    model = model_of(tmp_path)
    reps = shards.replicas(model, 2)
    for r in reps:
        for a, b in zip(r.parameters(), model.parameters()):
            assert a is not b and a.data_ptr() == b.data_ptr() and a.is_leaf
        assert all(a is b for a, b in zip(r.buffers(), model.buffers()))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.load_state_dict(model.state_dict())
    assert shards.replicas(model, 2)[0] is reps[0]
    first = next(model.parameters())
    first.data = first.data.clone()
    fresh = shards.replicas(model, 2)
    assert fresh[0] is not reps[0] and next(fresh[0].parameters()).data_ptr() == first.data_ptr()
    model.eval()
    assert not any(r.training for r in shards.replicas(model, 2))


def test_a_failing_shard_leaves_the_gradients_as_they_were(tmp_path):
    """A token outside the vocabulary in one shard's rows: its error goes on after the other
    shard has finished; no gradient reaches the model, and the replicas keep none."""
    model = model_of(tmp_path)
    x, y = ragged()
    x[5, 3] = 99
    with pytest.raises(DataError, match="token id 99"):
        forward_backward(model, x, y, shards=2)
    assert all(p.grad is None for p in model.parameters())
    assert all(q.grad is None for r in shards.replicas(model, 2) for q in r.parameters())


def test_rows_are_dealt_by_length_in_turn():
    """Longest first, ties in batch order, row k of that order to shard k mod S; a pair's rows
    by both documents' lengths."""
    x = torch.zeros(6, 10, dtype=torch.long)
    for b, n in enumerate((3, 10, 5, 10, 1, 7)):
        x[b, :n] = 1
    # order: 1 (10), 3 (10), 5 (7), 2 (5), 0 (3), 4 (1)
    assert [r.tolist() for r in shards.deal(x, None, 0, 2)] == [[0, 1, 5], [2, 3, 4]]
    assert [r.tolist() for r in shards.deal(x, None, 0, 4)] == [[0, 1], [3, 4], [5], [2]]
    x2 = torch.ones(6, 4, dtype=torch.long)
    x2[1, 1:] = 0
    # both documents: 7, 11, 9, 14, 5, 11 -> order 3, 1, 5, 2, 0, 4
    assert [r.tolist() for r in shards.deal(x, x2, 0, 2)] == [[0, 3, 5], [1, 2, 4]]


def test_drawing_from_sets_this_threads_generator_only():
    """dropout_masks draws from the generator drawing_from gives this thread (the default one
    untouched); another thread meanwhile draws from the default generator."""
    like = torch.zeros(1)
    before = torch.get_rng_state()
    other = []
    with drawing_from(torch.Generator().manual_seed(4)):
        mine = dropout_masks((5,), 2, 8, 0.3, like, True)[0]
        assert torch.equal(torch.get_rng_state(), before)
        t = threading.Thread(target=lambda: other.append(dropout_masks((5,), 2, 8, 0.3, like, True)[0]))
        t.start()
        t.join()
    torch.set_rng_state(before)
    assert torch.equal(other[0], dropout_masks((5,), 2, 8, 0.3, like, True)[0])
    torch.manual_seed(4)
    assert torch.equal(mine, dropout_masks((5,), 2, 8, 0.3, like, True)[0])
    assert not torch.equal(mine, other[0])
    with native.disabled(), drawing_from(torch.Generator().manual_seed(4)):   # random_ from it
        assert torch.equal(mine, dropout_masks((5,), 2, 8, 0.3, like, True)[0])


@pytest.mark.parametrize("bad, match", [
    (dict(shards=0), r"shards = 0: expected a positive integer"),
    (dict(shards=2, overlap=True), r"shards = 2 and overlapped AMRB replays"),
    (dict(shards=2, shard_threads=0), r"threads = 0: expected a positive integer or None"),
    (dict(shards=2, loss_fn=lambda z, y: z.sum()), r"batch shards .* need the default loss"),
])
def test_shards_are_refused_where_they_cannot_run(tmp_path, bad, match):
    model = model_of(tmp_path)
    x, y = ragged()
    with pytest.raises(ConfigError, match=match):
        forward_backward(model, x, y, **bad)
    assert all(p.grad is None for p in model.parameters())


def test_shards_are_refused_off_the_cpu_and_with_a_compiled_stack():
    with pytest.raises(ConfigError, match=r"shards = 2 runs the batch's shards on CPU threads; the device is cuda"):
        shards.check(2, device="cuda")
    with pytest.raises(ConfigError, match=r"shards = 2 needs the eager block stack"):
        shards.check(2, device="cpu", compiled=True)
    shards.check(1, device="cuda")


def test_a_shard_on_another_thread_runs_under_the_callers_autocast(tmp_path):
    """torch.autocast is per thread: the shards' threads enter the caller's, so two shards at
    once give the bits of the same two in turn on the caller's thread (bfloat16 on the CPU)."""
    model = model_of(tmp_path, "rmt", "none")
    x, y = ragged()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        one = step(model, x, y, shards=2, shard_threads=1)
        two = step(model, x, y, shards=2)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        plain = step(model, x, y, shards=2)
    assert torch.equal(one[1], two[1]) and all(torch.equal(one[2][n], two[2][n]) for n in one[2])
    assert not torch.equal(one[1], plain[1])                     # autocast did change the numbers


class _Rows(torch.utils.data.Dataset):
    """Items as the data modules give them: token ids and a label."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        n = int((self.x[i] != 0).sum())
        return {"tokens": self.x[i, :n], "label": int(self.y[i])}


def test_evaluation_on_two_threads_gives_the_one_threads_numbers(tmp_path):
    """evaluate_dataset(threads=2): two batches at once, each computed as it is alone and summed
    in batch order: the same loss and accuracy bits as one thread; an error in a batch goes on
    once the batch beside it has finished."""
    from rmaat_model.evaluate import evaluate_dataset
    model = model_of(tmp_path)
    x, y = ragged(B=23, seed=8)
    y[2] = 1
    data = _Rows(x, y)
    one = evaluate_dataset(model, data, batch_size=4, pad_id=0)
    two = evaluate_dataset(model, data, batch_size=4, pad_id=0, threads=2)
    assert one == two and one["n"] == 23 and model.training
    x[21, 3] = 99                                                    # in the last batch
    with pytest.raises(DataError, match="token id 99"):
        evaluate_dataset(model, _Rows(x, y), batch_size=4, pad_id=0, threads=2)
    assert model.training
