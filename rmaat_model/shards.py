"""Batch shards: one training step's batch split by rows, each shard on its own CPU thread.

At the sizes of the demo's models (d_model 64, batches of 32) a step is thousands of small
operators, which a second intra-op thread splits at a cost each. Two halves of the batch, each
through ``forward_backward`` on its own thread with one intra-op thread, keep both cores busy
instead (the block's C++ node and the backward release the interpreter lock while they
compute): the demo's ListOps step ran 1.20-1.25x as fast as with two intra-op threads
(bench/train_step_speed.py --threads 2 --shards 2, docs/benchmarks.md).

What a shard is:

- its rows: the batch's rows ordered by length (longest first, ties in batch order) and dealt
  in turn, row k of that order to shard k mod S, so the shards get equal work and about the
  same number of segments;
- its weights: a replica of the model whose parameters are new leaf tensors on the model's
  storage (an optimiser step or a loaded state is seen at once), and whose buffers are the
  model's own; each replica collects its own gradients;
- its dropout draws: a generator of its own (kernels.drawing_from), seeded at each step from a
  draw of the default generator (or of the caller's dropout generator), so a shard draws the
  same masks whichever thread runs it; AMRB records and replays that generator's state.

The step's loss is the shards' cross-entropy means weighted by their share of the batch's
labels (those not ``ignore_index``'ed), and each parameter's gradient is the shards' gradients
with the same weights, summed in shard order and added to ``.grad`` as ``backward`` would.
The numbers follow the shard count, not the thread count or which thread ran which shard; a
step with S shards is the mean over the batch, as one shard's, to float round-off, with other
dropout masks. AMRB's gradients equal BPTT's with the same shards (each shard's do).

CPU only; not with overlapped replays (which take the second thread) nor a compiled block
stack. Third-party imports: torch only.
"""

from __future__ import annotations

import copy
import threading
import weakref
from concurrent import futures
from typing import Callable

import torch
import torch.nn.functional as F

from astro_rmaat.errors import ConfigError
from rmaat_model import native
from rmaat_model.kernels import drawing_from, dropout_generator

#: the replicas made of a model so far: (replica, its parameters, its buffers, what it was made on) each
_REPLICAS: "weakref.WeakKeyDictionary[torch.nn.Module, list[tuple]]" = weakref.WeakKeyDictionary()
_POOL: list[tuple[int, futures.ThreadPoolExecutor]] = []   # (its thread count, the pool), when made
_POOL_LOCK = threading.Lock()


def check(shards: int, *, device: torch.device | str, compiled: bool = False, overlap: bool = False) -> None:
    """Refuse, before any work, shards that cannot run as described in the module doc."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"shards = {shards!r}: expected a positive integer (1: the whole batch at once)")
    if shards == 1:
        return
    if torch.device(device).type != "cpu":
        raise ConfigError(f"shards = {shards} runs the batch's shards on CPU threads; the device is "
                          f"{torch.device(device).type} (set shards = 1)")
    if overlap:
        raise ConfigError(f"shards = {shards} and overlapped AMRB replays both take the second thread; "
                          "use one or the other")
    if compiled:
        raise ConfigError(f"shards = {shards} needs the eager block stack: a compiled one is bound to the "
                          "model's own weights (set compile = false or shards = 1)")


def threads_each(workers: int) -> int:
    """torch's intra-op threads split equally between ``workers`` threads running at once (at
    least one each): the count each sets for itself (``torch.set_num_threads`` is per thread)."""
    return max(1, torch.get_num_threads() // workers)


def deal(tokens: torch.Tensor, tokens2: torch.Tensor | None, pad_id: int, shards: int) -> list[torch.Tensor]:
    """Each shard's row indices (ascending): rows ordered by real length (both documents' for a
    pair), longest first and ties in batch order, dealt in turn."""
    def length(x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(1, x.shape[1] + 1, device=x.device)
        return ((x != pad_id) * pos).amax(dim=1) if x.shape[1] else torch.zeros(x.shape[0], dtype=torch.long)
    work = length(tokens) if tokens2 is None else length(tokens) + length(tokens2)
    order = torch.sort(work, descending=True, stable=True).indices
    return [order[j::shards].sort().values for j in range(shards)]


def replicas(model: torch.nn.Module, n: int) -> list[torch.nn.Module]:
    """n replicas of ``model`` on its weights (module doc), kept while they still are."""
    return [r for r, _ in _replicas(model, n)[1]]


def _replicas(model: torch.nn.Module, n: int) -> tuple[list[torch.nn.Parameter], list[tuple]]:
    """``replicas``, with the parameter lists: (the model's parameters, n (replica, its parameters))."""
    params, buffers = list(model.parameters()), list(model.buffers())
    # what a replica was made on: the model's parameters' storage, shapes, dtypes and
    # requires_grad (a replica's parameters keep them), and its buffers themselves
    made_on = [(p.data_ptr(), p.shape, p.dtype, p.requires_grad) for p in params]

    def current(kept: tuple) -> bool:
        _, _, rb, on = kept
        return on == made_on and len(rb) == len(buffers) and all(a is b for a, b in zip(rb, buffers))

    kept = [k for k in _REPLICAS.get(model, []) if current(k)]
    for r, *_ in kept:
        if r.training != model.training:   # (only this function sets a replica's modules' modes)
            r.train(model.training)
    while len(kept) < n:
        memo: dict = {id(b): b for b in buffers}
        for p in params:
            memo[id(p)] = torch.nn.Parameter(p.detach(), requires_grad=p.requires_grad)
        r = copy.deepcopy(model, memo).train(model.training)
        kept.append((r, list(r.parameters()), list(r.buffers()), made_on))
    _REPLICAS[model] = kept
    return params, [(r, rp) for r, rp, *_ in kept[:n]]


def _pool(workers: int) -> futures.ThreadPoolExecutor:
    """The worker threads of the shards after the first (that one runs on the caller's thread):
    one pool, grown when more are asked for (the smaller one's threads end once idle)."""
    with _POOL_LOCK:
        if not _POOL or _POOL[0][0] < workers:
            if _POOL:
                _POOL.pop()[1].shutdown(wait=False)
            _POOL.append((workers, futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rmaat-shard")))
        return _POOL[0][1]


def run(one: Callable[..., tuple[torch.Tensor, torch.Tensor]], model, tokens: torch.Tensor,
        labels: torch.Tensor, *, shards: int, threads: int | None = None, tokens2: torch.Tensor | None = None,
        stats: dict | None = None, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """``one`` (``rmaat_model.amrb.forward_backward``, which calls this for ``shards`` > 1) of
    the batch in ``shards`` row shards (module doc), on ``threads`` threads at once (None: one
    per shard; 1: in turn on the caller's), the caller's among them, each with an equal part of
    torch's intra-op threads (at least one). ``options`` go to each shard's call (method, k);
    the loss is cross-entropy's batch mean. Returns (loss detached, logits (B, K) detached) in
    the batch's row order."""
    model = getattr(model, "module", model)
    check(shards, device=tokens.device, compiled=getattr(model, "_compiled_window", None) is not None,
          overlap=options.get("overlap", False))
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads = {threads!r}: expected a positive integer or None (one per shard)")
    if options.get("loss_fn", F.cross_entropy) is not F.cross_entropy:
        raise ConfigError("batch shards weight each shard's loss by its share of the labels: they need the "
                          "default loss (cross-entropy's batch mean)")
    S = min(shards, tokens.shape[0])
    rows = deal(tokens, tokens2, model.cfg.pad_id, S)
    count = labels.ne(-100).sum().item()                          # F.cross_entropy's ignore_index
    weights = [labels.index_select(0, r).ne(-100).sum().item() / count if count else 1.0 / S for r in rows]
    seeds = torch.randint(0, 2 ** 62, (S,), generator=dropout_generator()).tolist()
    params, kept = _replicas(model, S)
    reps = [r for r, _ in kept]
    intra = torch.get_num_threads()
    workers = S if threads is None else min(S, threads)
    per = threads_each(workers)
    grad_mode = torch.is_grad_enabled()
    autocast = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    shard_stats = [None if stats is None else {} for _ in range(S)]

    def one_shard(j: int):
        torch.set_num_threads(per)   # this thread's own count
        r = rows[j]
        with drawing_from(torch.Generator().manual_seed(seeds[j])), torch.set_grad_enabled(grad_mode), \
                torch.autocast("cpu", dtype=autocast[1], enabled=autocast[0]):
            return one(reps[j], tokens.index_select(0, r), labels.index_select(0, r),
                       tokens2=None if tokens2 is None else tokens2.index_select(0, r),
                       stats=shard_stats[j], **options)

    def shards_of(js: list[int]):
        return [one_shard(j) for j in js]

    plan = [list(range(w, S, workers)) for w in range(workers)]   # thread w: shards w, w + workers, ...
    results: list = [None] * S
    pending: list[futures.Future] = []
    try:
        pending = [_pool(workers - 1).submit(shards_of, js) for js in plan[1:]] if workers > 1 else []
        for j, res in zip(plan[0], shards_of(plan[0])):
            results[j] = res
        for js, f in zip(plan[1:], pending):
            for j, res in zip(js, f.result()):
                results[j] = res
    except BaseException:
        futures.wait(pending)   # every shard has stopped writing its replica's gradients ...
        for r in reps:          # ... before they are dropped, and the first error goes on
            r.zero_grad(set_to_none=True)
        raise
    finally:
        torch.set_num_threads(intra)

    loss = sum(w * res[0] for w, res in zip(weights, results))
    logits = results[0][1].new_empty((tokens.shape[0], results[0][1].shape[1]))
    for r, res in zip(rows, results):
        logits.index_copy_(0, r, res[1])
    _sum_grads(params, [rp for _, rp in kept], weights)
    if stats is not None:
        for s in shard_stats:
            for key, value in s.items():
                stats[key] = stats.get(key, 0) + value
    return loss, logits


def _sum_grads(params: list[torch.nn.Parameter], rep_params: list[list[torch.nn.Parameter]],
               weights: list[float]) -> None:
    """p.grad += the sum over shards j, in shard order, of weights[j] times replica j's gradient
    of p (``rep_params[j]``, in ``params``' order; a shard that gave a parameter none adds
    nothing); the replicas' gradients are released. One call to the extension's ``sum_grads``
    where it is loaded and every replica's gradient is a dense float32 CPU tensor (the same
    bits as the operators below, without the interpreter around each)."""
    ext = native.extension()
    if ext is not None and ext.sum_grads(params, rep_params, [float(w) for w in weights]):
        return
    grads = [[q.grad for q in rp] for rp in rep_params]
    for rp in rep_params:
        for q in rp:
            q.grad = None
    for i, p in enumerate(params):
        total = None
        for g, w in zip(grads, weights):
            if g[i] is not None:
                total = g[i].mul_(w) if total is None else total.add_(g[i], alpha=w)
        if total is None:
            continue
        if p.grad is None:
            p.grad = total
        else:
            p.grad.add_(total)
