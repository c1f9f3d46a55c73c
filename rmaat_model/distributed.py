"""Multi-process training with ``torchrun``: process group, DDP, gradient averaging, sampling.

One code path serves one process and many: :func:`setup` reads the variables ``torchrun``
sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and, when
``WORLD_SIZE > 1``, opens the process group — ``gloo`` on CPU, ``nccl`` on GPU. Without
those variables it is a plain single process (rank 0 of 1).

Gradients under AMRB. AMRB's backward is several ``backward()`` calls per optimiser step
(one per replayed segment), run on the bare module's segment step, not through
``DistributedDataParallel.forward``. DDP's bucketed all-reduce fires once per parameter per
backward and expects one forward per backward, so it cannot average those gradients
correctly. The scheme used here, for every method (AMRB, BPTT, truncated BPTT):

1. the model is wrapped in ``DistributedDataParallel`` — at construction this broadcasts
   rank 0's parameters and buffers, so all replicas start identical;
2. each rank runs ``forward_backward`` on ``ddp.module`` inside ``ddp.no_sync()``, which
   accumulates its local gradients of the mean loss over its local batch;
3. :func:`average_gradients` then all-reduces (sums) the gradients once, flattened into one
   buffer, and divides by the world size.

With equal local batch sizes (the global batch must divide by the world size) this is the
gradient of the mean loss over the global batch — the same update a single process makes
on that whole batch, up to floating-point summation order (tested). Clipping and the
optimiser step then run identically on every rank.

Each rank gets its own seed (``seed + rank``) for dropout; the parameter initialisation is
drawn from the common seed before wrapping. Only rank 0 logs and writes files.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from astro_rmaat.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False          # True when :func:`setup` opened the process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r}: expected an integer "
                          "(it is set by torchrun)") from None


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    """``pref`` is 'auto', 'cpu' or 'cuda'."""
    if pref == "cpu":
        return torch.device("cpu")
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device = 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device_pref: str = "auto") -> DistEnv:
    """Open the process group from the torchrun environment (or stay single-process)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = pick_device(device_pref, local_rank)
    if world <= 1:
        return DistEnv(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        # torch.distributed.nn.functional binds the default group into its functions' default
        # arguments when it is first imported (DDP imports it, through torch._dynamo). Imported
        # after the group exists, it keeps the group, and with it gloo's threads, alive past
        # destroy_process_group until interpreter exit, where a gloo thread that drops a
        # collective's tensor must take the GIL and aborts the process (findings.md). Imported
        # first, those defaults are None.
        import torch.distributed.nn.functional  # noqa: F401
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=30))
        owns = True
    return DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(),
                   local_rank=local_rank, device=device, owns_group=owns)


def teardown(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, env: DistEnv) -> torch.nn.Module:
    """DDP-wrap ``model`` when distributed (broadcasts rank 0's weights); else return it."""
    if not env.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    ids = [env.device.index] if env.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def no_sync(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """``ddp.no_sync()`` for a DDP model; a null context otherwise."""
    fn = getattr(model, "no_sync", None)
    return fn() if fn is not None else contextlib.nullcontext()


def average_gradients(params: Iterable[torch.nn.Parameter], env: DistEnv) -> None:
    """All-reduce the gradients of ``params`` once (one flat buffer) and divide by world size.

    A parameter without a gradient on some rank contributes zeros, so every rank takes
    part in the same collective.
    """
    if not env.distributed:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= env.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def all_reduce_sum(values: Sequence[float], env: DistEnv) -> list[float]:
    """Sum a few float64 numbers over ranks (metrics)."""
    t = torch.tensor(list(values), dtype=torch.float64)
    if env.distributed:
        t = t.to(env.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's ``obj`` on every rank (decisions, error messages)."""
    if not env.distributed:
        return obj
    box = [obj if env.is_main else None]
    dist.broadcast_object_list(box, src=0, device=env.device if env.device.type == "cuda" else None)
    return box[0]


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (RNG states for the checkpoint)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def raise_together(env: DistEnv, fn, *args, **kwargs):
    """Run ``fn`` on rank 0 only; if it raises, every rank raises the same error.

    Used for the file-system work only rank 0 does (preparing the run directory), so a
    refused run stops all ranks with one clear message instead of a hang.
    """
    result, error = None, None
    if env.is_main:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised below on every rank
            error = exc
    if env.distributed:
        try:
            payload = pickle.dumps(error)
        except Exception:  # unpicklable error: fall back to its message
            payload = pickle.dumps(RuntimeError(str(error)))
        error = pickle.loads(broadcast_object(payload, env))
    if error is not None:
        raise error
    return broadcast_object(result, env)


# --------------------------------------------------------------------------- sampling
class StepBatchSampler:
    """Index batches of this rank for optimiser steps ``start .. stop-1``; resumable by step.

    The data position is the step itself: step ``s`` of a run is batch ``s % per_epoch``
    of epoch ``s // per_epoch``, and epoch ``e`` is the permutation a
    :class:`~torch.utils.data.DistributedSampler` draws with ``seed`` after
    ``set_epoch(e)``. Rank ``r`` of ``W`` takes ``perm[r::W]``, so its ``k``-th local batch
    together with the other ranks' forms the global batch ``perm[k*B : (k+1)*B]`` — the
    batch a single process with ``B = global batch`` uses at the same step.
    """

    def __init__(self, n_items: int, global_batch: int, seed: int, env: DistEnv,
                 start: int, stop: int) -> None:
        if global_batch % env.world_size:
            raise ConfigError(f"batch_size = {global_batch}: expected a multiple of the number of "
                              f"processes ({env.world_size})")
        self.local_batch = global_batch // env.world_size
        self.sampler = DistributedSampler(range(n_items), num_replicas=env.world_size,
                                          rank=env.rank, shuffle=True, seed=seed, drop_last=True)
        self.per_epoch = len(self.sampler) // self.local_batch
        if self.per_epoch < 1:
            raise ConfigError(f"batch_size = {global_batch} exceeds the {n_items} training "
                              "examples; lower batch_size")
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while step < self.stop:
            epoch, k = divmod(step, self.per_epoch)
            self.sampler.set_epoch(epoch)
            idx = list(self.sampler)
            for j in range(k, self.per_epoch):
                if step >= self.stop:
                    return
                yield idx[j * self.local_batch:(j + 1) * self.local_batch]
                step += 1


def shard(n_items: int, env: DistEnv) -> list[int]:
    """Evaluation indices of this rank: ``range(n)[rank::world]`` (no padding, no repeats)."""
    return list(range(env.rank, n_items, env.world_size))
