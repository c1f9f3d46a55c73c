"""Astrocytic Memory Replay Backpropagation (AMRB), full BPTT and truncated BPTT(k).

A segment recurrence is a step ``(segment, memory) -> (output, memory)`` applied to
segments 0..T-1 from an initial memory, with a loss on the last segment's output or on
every segment's output. Three ways to get the gradients:

``bptt``   one graph over all T segments; activations of every segment are kept until the
           backward, so memory grows linearly in T.
``amrb``   a no-grad forward (inference mode) keeps only the memory entering each segment and the RNG state
           (CPU, and every CUDA device when CUDA is present); the backward then replays the
           segments last to first, each inside ``torch.random.fork_rng`` with its recorded RNG
           state (so dropout masks are the forward's; a batch shard's own dropout generator,
           kernels.drawing_from, is recorded and restored the same way), each with its own small graph, and
           backpropagates the segment loss (if any) together with the incoming memory
           gradient, handing the gradient of its input memory to the segment before.
           (The last segment is not replayed: it runs once, with its graph, right after
           the no-grad forward of the others.)
           Gradients equal BPTT's to float round-off (the same operations, segment by segment,
           summed across segments in another order; in a ragged batch the loss is summed by
           segment and the no-grad pass computes fewer rows, which can round a product
           differently); peak activation memory is one segment's graph plus T memory
           tensors. The cost is T-1 extra segment forwards (fewer in a ragged batch, below).
           With ``overlap`` the replays run on a second thread, one segment ahead: segment
           t-1's replay needs only its stored memory and RNG state, so it runs while this
           thread backpropagates segment t (the block's C++ node releases the interpreter lock
           while it computes, and the backward runs in C++, so the two threads do overlap). The
           intra-op threads are split between the two; the gradients are accumulated on this
           thread in the serial order, so a run gives the same bits each time, and those of the
           serial replay to float round-off (the thread counts differ, and with them how a
           reduction is split). It keeps two segments' graphs alive instead of one.
``tbptt``  truncated BPTT(k): segments in chunks of k counted back from the last one; the
           memory entering a chunk is detached. With a loss on the last segment only, the
           earlier chunks run without a graph (their parameters get no gradient from them).

The memory is a single tensor. If the initial memory carries a graph (a learned initial
memory expanded to the batch) its gradient flows into that graph exactly once.

``forward_backward`` applies this to the models of ``rmaat_model.model``: the memory is
the unscaled memory output of each segment, the loss is the classifier's on the final state.
In a ragged batch (sequences of T_b < T segments) with the default loss (cross-entropy's batch
mean, summed by the segment each sequence ends in) AMRB can read a sequence's loss in the
replay of its own last segment; its no-grad pass then runs segments 0..T_b-2 of it only,
T_b - 1 extra segment forwards, where reading the loss at the end costs one more. Each early
read costs a classifier pass, so it is taken for the sequences ending in a segment only when
their segment forwards are worth it (``EARLY_READ_MIN_MACS``): on the demo's ListOps batches
(100-500 tokens in segments of 128, d_model 64) that saves 6 % of a step's matrix-product
FLOPs; the recall demo's tiny segments (16 tokens, d_model 32) read every loss at the end.
Whole-sequence archs (transformer, at) have one "segment": every method is plain backprop.
No DDP hooks are assumed: the caller all-reduces gradients afterwards.
"""

from __future__ import annotations

import contextlib
import time
import typing
from concurrent import futures
from typing import Any, Callable, Iterable, Literal, Sequence

import torch
import torch.nn.functional as F

from astro_rmaat.errors import ConfigError
from rmaat_model import shards as batch_shards
from rmaat_model.kernels import drawing_from, dropout_generator

Step = Callable[[Any, torch.Tensor], tuple[Any, torch.Tensor]]
SegmentLoss = Callable[[Any, int], torch.Tensor]
Method = Literal["amrb", "bptt", "tbptt"]   # TrainConfig.method's type too
METHODS: tuple[str, ...] = typing.get_args(Method)


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _rng_state(devices: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The state the dropout draws read: this thread's dropout generator's when one is set
    (kernels.drawing_from), else the CPU's and every CUDA device's."""
    gen = dropout_generator()
    if gen is not None:
        return gen.get_state(), []
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]], devices: Sequence[int]) -> None:
    gen = dropout_generator()
    if gen is not None:
        gen.set_state(state[0])
        return
    torch.set_rng_state(state[0])
    for d, s in zip(devices, state[1]):
        torch.cuda.set_rng_state(s, d)


@contextlib.contextmanager
def _forked_rng(devices: Sequence[int]):
    """torch.random.fork_rng for the state ``_rng_state`` reads: what is drawn inside leaves it
    where it was."""
    if dropout_generator() is None:
        with torch.random.fork_rng(devices=devices):
            yield
        return
    saved = _rng_state(devices)
    try:
        yield
    finally:
        _set_rng_state(saved, devices)


def _has_loss(i: int, T: int, loss_on: str) -> bool:
    return loss_on == "every" or i == T - 1


def run_segments(step: Step, segments: Iterable[Any], memory: torch.Tensor, loss_fn: SegmentLoss, *,
                 method: Method = "amrb", k: int | None = None,
                 loss_on: Literal["last", "every"] = "last",
                 stats: dict | None = None, nograd_step: Step | None = None,
                 overlap: bool = False) -> tuple[torch.Tensor, Any]:
    """Forward and backward through the recurrence; populates ``.grad``.

    ``loss_fn(output, i)`` is the loss of segment i (a scalar), or None for a segment without
    one (the last segment must carry one); the total loss is the sum over the segments that
    carry one. Returns (total loss detached, last output detached).
    ``nograd_step``, when given, replaces ``step`` in AMRB's no-grad pass: a step whose memory
    output must be ``step``'s wherever a later segment reads it, and that draws from the RNG
    exactly as ``step`` does, but may skip what only this segment's loss would read.
    ``overlap`` (amrb only): each replay runs on a second thread while this one backpropagates
    the segment after it (module doc); torch's intra-op threads, at least 2, are split between
    the two for the replays and restored after. CPU only, and not under torch.autocast (per
    thread, as saved-tensor hooks and the profiler are: they do not reach the replays).
    ``stats``, when given, receives ``stored_memory_bytes`` (AMRB's kept memories) and the wall
    seconds of each phase: ``forward_s`` and ``backward_s`` (bptt), ``nograd_s`` (amrb's first
    pass), ``forward_s`` and ``backward_s`` (its segments with their graphs) and ``other_s`` (its
    RNG and memory bookkeeping); with ``overlap``, ``forward_s`` counts the replays on the replay
    thread beside the last segment's forward on this one, and ``wait_s`` is the time this thread
    waited for a replay. tbptt records none.
    """
    segments = list(segments)
    T = len(segments)
    if T == 0:
        raise ConfigError("run_segments: expected at least one segment")
    if loss_on not in ("last", "every"):
        raise ConfigError(f"loss_on = {loss_on!r}: expected 'last' or 'every'")
    if overlap:
        _check_overlap(method, memory)
    if method == "bptt":
        return _bptt(step, segments, memory, loss_fn, loss_on, stats)
    if method == "tbptt":
        if k is None or isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"truncated BPTT needs k = segments to backpropagate through, an integer >= 1; got {k!r}")
        return _tbptt(step, segments, memory, loss_fn, loss_on, k)
    if method == "amrb":
        return _amrb(step, nograd_step or step, segments, memory, loss_fn, loss_on, stats, overlap)
    raise ConfigError(f"method = {method!r}: expected one of {', '.join(map(repr, METHODS))}")


def _check_overlap(method: str, memory: torch.Tensor) -> None:
    """Overlapped replays, refused before any work where they cannot run as the serial ones."""
    if method != "amrb":
        raise ConfigError(f"overlapping replays are AMRB's; method = {method!r} has none")
    if memory.device.type != "cpu":
        raise ConfigError(f"overlapping replays split CPU threads; the memory is on {memory.device.type}")
    threads = torch.get_num_threads()
    if threads < 2:
        raise ConfigError(f"AMRB with overlapping replays needs at least 2 intra-op threads, one for "
                          f"the replays and one for the backward; torch has {threads}")
    if torch.is_autocast_enabled("cpu"):
        # autocast, like saved-tensor hooks and the profiler, is per thread: the replays would
        # run outside it
        raise ConfigError("overlapping replays do not run under torch.autocast (the replay thread would "
                          "run without it); use one or the other")


def _detach_out(out: Any) -> Any:
    return out.detach() if isinstance(out, torch.Tensor) else out


def _bptt(step, segments, memory, loss_fn, loss_on, stats):
    T, total, out = len(segments), None, None
    t0 = time.perf_counter()
    for i, seg in enumerate(segments):
        out, memory = step(seg, memory)
        li = loss_fn(out, i) if _has_loss(i, T, loss_on) else None
        if li is not None:
            total = li if total is None else total + li
    t1 = time.perf_counter()
    total.backward()
    if stats is not None:
        stats.update(forward_s=t1 - t0, backward_s=time.perf_counter() - t1)
    return total.detach(), _detach_out(out)


def _tbptt(step, segments, memory, loss_fn, loss_on, k):
    T, total, out = len(segments), 0.0, None
    # chunk boundaries counted back from the last segment: [.., T-2k), [T-2k, T-k), [T-k, T)
    starts = list(range(T - k, 0, -k))[::-1]
    bounds = list(zip([0] + starts, starts + [T]))
    for j, (a, b) in enumerate(bounds):
        if j > 0:
            memory = memory.detach()
        needs_grad = any(_has_loss(i, T, loss_on) for i in range(a, b))
        with torch.set_grad_enabled(needs_grad and torch.is_grad_enabled()):
            chunk_loss = None
            for i in range(a, b):
                out, memory = step(segments[i], memory)
                li = loss_fn(out, i) if _has_loss(i, T, loss_on) else None
                if li is not None:
                    chunk_loss = li if chunk_loss is None else chunk_loss + li
        if chunk_loss is not None:
            chunk_loss.backward()
            total = total + chunk_loss.detach()
    return torch.as_tensor(total).detach(), _detach_out(out)


def _amrb(step, nograd_step, segments, memory, loss_fn, loss_on, stats, overlap=False):
    T = len(segments)
    devices = _cuda_devices()
    generator = dropout_generator()
    kept: list[torch.Tensor] = []           # memory entering segment i
    rng: list[tuple] = []                   # RNG state before segment i (i < T-1)
    t_start = time.perf_counter()
    # inference mode: no graph, and no version counters or view tracking either (a few % of a
    # segment's forward at small sizes); its tensors are cloned back before a graph reads them
    with torch.inference_mode():
        m = memory.detach()
        for i, seg in enumerate(segments[:-1]):
            rng.append(_rng_state(devices))
            kept.append(m)
            _, m = nograd_step(seg, m)
    kept.append(m)
    nograd_s = time.perf_counter() - t_start
    if stats is not None:
        stats["stored_memory_bytes"] = sum(x.numel() * x.element_size() for x in kept[1:])
    times = {"forward_s": 0.0, "backward_s": 0.0, "wait_s": 0.0}

    def forward(i: int):
        """Segment i with its graph: (memory in, output, memory out, loss or None). The last
        segment runs straight after the no-grad pass (the RNG is where it must be); the others
        replay inside fork_rng from their recorded state."""
        t0 = time.perf_counter()
        with _forked_rng(devices) if i < T - 1 else contextlib.nullcontext():
            if i < T - 1:
                _set_rng_state(rng[i], devices)
            with torch.enable_grad():
                m_in = memory if i == 0 else kept[i].clone().requires_grad_(True)
                out, m_out = step(segments[i], m_in)
                li = loss_fn(out, i) if _has_loss(i, T, loss_on) else None
        kept[i] = None  # type: ignore[call-overload]  (free as we go)
        times["forward_s"] += time.perf_counter() - t0
        return m_in, out, m_out, li

    def backward(i: int, m_in, m_out, li, grad_m):
        """Backpropagate segment i's loss and the gradient of its memory output; returns the
        gradient of its memory input (None for segment 0)."""
        t0 = time.perf_counter()
        tensors, grads = [], []
        if li is not None:
            tensors.append(li); grads.append(None)
        if grad_m is not None and m_out.requires_grad:
            tensors.append(m_out); grads.append(grad_m)
        if tensors:
            torch.autograd.backward(tensors, grads)
        times["backward_s"] += time.perf_counter() - t0
        if i == 0:
            return None
        return m_in.grad if m_in.grad is not None else torch.zeros_like(m_in)

    total, last_out, grad_m, pending = None, None, None, None
    overlapped = overlap and T > 1
    threads = per = torch.get_num_threads()
    if overlapped:
        # Segment i - 1's replay needs only its stored memory and RNG state, so it runs on a
        # second thread while this one backpropagates segment i. Each thread takes half the
        # intra-op threads (run_segments checked there are two); the replays draw from the RNG
        # only inside fork_rng, and the backward, which accumulates the gradients, stays on this
        # thread in segment order.
        per = batch_shards.threads_each(2)
        torch.set_num_threads(per)

    def replay(i: int):
        torch.set_num_threads(per)   # this thread's own count (and torch's, already set to it)
        with drawing_from(generator):   # this thread's dropout generator, if it has one
            return forward(i)

    try:
        t0 = time.perf_counter()
        fwd = forward(T - 1)
        times["last_s"] = time.perf_counter() - t0   # on this thread, also when overlapped
        for i in range(T - 1, -1, -1):
            m_in, out, m_out, li = fwd
            pending = _replayer().submit(replay, i - 1) if overlapped and i > 0 else None
            if li is not None:
                total = li.detach() if total is None else total + li.detach()
            if i == T - 1:
                last_out = _detach_out(out)
            del out, fwd
            grad_m = backward(i, m_in, m_out, li, grad_m)
            del m_in, m_out, li
            if pending is not None:
                t0 = time.perf_counter()
                fwd = pending.result()
                times["wait_s"] += time.perf_counter() - t0
            elif i > 0:
                fwd = forward(i - 1)
    finally:
        if pending is not None and not pending.done():
            # a backward that raised: the replay under way finishes (and its fork_rng gives the
            # RNG back) before the caller goes on
            futures.wait([pending])
        if overlapped:
            torch.set_num_threads(threads)
    if stats is not None:
        busy = (times["last_s"] + times["backward_s"] + times["wait_s"] if overlapped
                else times["forward_s"] + times["backward_s"])
        stats.update(nograd_s=nograd_s, forward_s=times["forward_s"], backward_s=times["backward_s"],
                     other_s=time.perf_counter() - t_start - nograd_s - busy)
        if overlapped:
            stats["wait_s"] = times["wait_s"]
    return total, last_out


_REPLAYER: list = []


def _replayer():
    """The one worker thread that runs AMRB's overlapped replays (created on first use)."""
    if not _REPLAYER:
        _REPLAYER.append(futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="amrb-replay"))
    return _REPLAYER[0]


# --------------------------------------------------------------------------- the models
#: A group of sequences that end together in segment t < T-1 has its loss read in t's replay
#: (and its last segment skipped by AMRB's no-grad pass) when their segment forwards would cost
#: at least this many multiply-adds of the matrix products. Reading it there costs a classifier
#: forward and backward: about 0.3-0.45 ms on one CPU thread, where a no-grad segment forward runs
#: at about 26 million multiply-adds per ms (both measured on the demo's configs, AMD EPYC, one
#: thread). The threshold asks for twice the break-even. Calibrated on a CPU only; on an Intel Xeon
#: it picks the same reads (bench/ragged_reads.py: ListOps 1.049x, recall none; docs/benchmarks.md).
EARLY_READ_MIN_MACS = 2e7


def segment_row_macs(cfg) -> int:
    """Multiply-adds of the matrix products of one sequence's segment forward, as
    ``EARLY_READ_MIN_MACS`` counts them: the four projections and the FFN of every block over
    the M + N window (the last block's smaller query set and the kernel left out: a ranking,
    not a count)."""
    return cfg.n_layers * (cfg.n_mem + cfg.segment_len) * (4 * cfg.d_model ** 2 + 2 * cfg.d_model * cfg.d_ff)


def _early_reads(model, plan, method: str, loss_fn) -> list[bool] | None:
    """Per segment t: read the loss of the sequences that end at t in t's replay (AMRB on a ragged
    batch with the default loss and a per-sequence classifier, when they are worth it; module
    doc), or None where no segment is, and the loss is read at the end on every final state."""
    cfg = model.cfg
    if (method != "amrb" or not plan.rows or plan.same_length or cfg.head != "cls"
            or loss_fn is not F.cross_entropy):
        return None
    row_macs = segment_row_macs(cfg)
    if plan.n_seg.shape[0] * row_macs < EARLY_READ_MIN_MACS:                    # not even all rows together
        return None
    ending = torch.bincount(plan.n_seg - 1, minlength=plan.n_segments).tolist()   # sequences ending at t
    split = [n > 0 and n * row_macs >= EARLY_READ_MIN_MACS for n in ending[:-1]] + [False]
    return split if any(split) else None


def forward_backward(model, tokens: torch.Tensor, labels: torch.Tensor, *,
                     method: Method = "amrb", k: int | None = None,
                     tokens2: torch.Tensor | None = None,
                     loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                     stats: dict | None = None, overlap: bool = False,
                     shards: int = 1, shard_threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward AND backward of one batch (``.grad`` populated, accumulated like ``backward``).

    ``loss_fn(logits, labels)`` reduces to a scalar (cross-entropy's batch mean by default; with
    that default, AMRB may read a ragged batch's loss by segment, module doc). ``overlap``: AMRB's
    replays on a second thread (``run_segments``). ``shards`` > 1: the batch's rows in that many
    shards, on ``shard_threads`` CPU threads at once (None: one per shard; rmaat_model.shards;
    default loss only).
    Returns (loss detached, logits (B, K) detached). A ``DistributedDataParallel`` wrapper
    is unwrapped (``.module``): all-reduce the gradients yourself afterwards.
    """
    if method not in METHODS:
        raise ConfigError(f"method = {method!r}: expected one of {', '.join(map(repr, METHODS))}")
    if shards != 1:
        return batch_shards.run(forward_backward, model, tokens, labels, shards=shards, threads=shard_threads,
                                method=method, k=k, tokens2=tokens2, loss_fn=loss_fn, stats=stats,
                                overlap=overlap)
    model = getattr(model, "module", model)
    plan = model.plan(tokens, tokens2)
    if not model.has_memory:
        logits = model.readout(plan, model.encode(plan))
        loss = loss_fn(logits, labels)
        loss.backward()
        return loss.detach(), logits.detach()
    captured: dict[str, torch.Tensor] = {}

    def step(t: int, state: torch.Tensor):
        new = model.step(plan, t, state)
        return new, new

    def loss_last(state: torch.Tensor, i: int) -> torch.Tensor:
        logits = model.readout(plan, state)
        captured["logits"] = logits.detach()
        return loss_fn(logits, labels)

    split = _early_reads(model, plan, method, loss_fn)
    if split is not None:
        # Ragged batch: the loss of the sequences that end in a segment t of ``split`` is read in
        # t's replay, so the no-grad pass skips their last segment (it computes only the states a
        # later segment reads); every other sequence's loss is read at the last segment, on its
        # final state. The batch mean is split into the sums over the sequences read at each
        # segment, each divided by the batch's count of labels (those not ignore_index'ed, as the
        # mean counts them): every logit's gradient is the one a single mean gives, 1 / count per
        # row. The classifier runs on every row and the loss reads those due, so its products
        # have BPTT's shapes and each row's logits round as they do there (on fewer rows a
        # product can take another kernel; through the learned retention table's cancelling sums
        # that moved its gradient by 1e-4).
        B, T = labels.shape[0], plan.n_segments
        count = labels.ne(-100).sum()                                 # F.cross_entropy's ignore_index
        early = torch.tensor(split, device=plan.n_seg.device)[plan.n_seg - 1]   # (B,); split[T-1] is False
        read = [(plan.n_seg == t + 1).nonzero().squeeze(1) if s else None for t, s in enumerate(split)]
        read[T - 1] = (~early).nonzero().squeeze(1)

        def nograd_step(t: int, state: torch.Tensor):
            new = model.step(plan, t, state, continuing_only=split[t])
            return new, new

        def loss_read(state: torch.Tensor, i: int) -> torch.Tensor | None:
            idx = read[i]
            if idx is None:
                return None
            logits = model.readout(plan, state).index_select(0, idx)
            if "logits" not in captured:
                captured["logits"] = logits.new_empty(B, logits.shape[1])
            captured["logits"].index_copy_(0, idx, logits.detach())
            return F.cross_entropy(logits, labels.index_select(0, idx), reduction="sum") / count

        loss, _ = run_segments(step, range(T), model.initial_memory(plan), loss_read,
                               method=method, loss_on="every", stats=stats, nograd_step=nograd_step,
                               overlap=overlap)
        return loss, captured["logits"]

    loss, _ = run_segments(step, range(plan.n_segments), model.initial_memory(plan), loss_last,
                           method=method, k=k, loss_on="last", stats=stats, overlap=overlap)
    return loss, captured["logits"]
