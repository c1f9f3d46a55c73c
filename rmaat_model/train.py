"""Training: ``train(cfg, out_dir)`` turns a :class:`TrainConfig` into a finished run directory.

A run directory holds::

    config.json         the TrainConfig (written first; the key to resuming)
    metrics.csv         one row per evaluation (step, lr, train/val loss and accuracy)
    model.safetensors   the latest weights, carrying the ModelConfig that rebuilds the model
                        (rmaat_model.checkpoint.load reads it; model.config.json beside it)
    best.safetensors    the weights with the best validation accuracy so far (+ best.config.json)
    ckpt.pt             full resume state: model, optimiser, scheduler, step, per-rank RNG
                        states, best-so-far, metrics rows (the data position is the step)
    results.json        best-on-validation checkpoint evaluated on val and test, the
                        majority-class baseline (written at the end)
    timing.json         wall-clock seconds so far (unfinished runs only; then in meta.json)
    meta.json           versions, git revision, seed, wall times (written last = finished)
    tb/                 TensorBoard events (only with ``tensorboard = true``)

Every file is written atomically. Rerunning the same config on an interrupted directory
resumes from ``ckpt.pt`` and ends with the same weights and metrics as an uninterrupted
run; a different config is refused; a finished run is never overwritten. The same config
and seed give the same bytes in every file but ``meta.json`` (the only home of wall times).

``ckpt.pt`` is written at every evaluation, every ``ckpt_every`` steps, and after each
``ckpt_minutes`` of work (default 2), whichever comes first; a kill (even ``kill -9``)
loses only the steps since the last checkpoint, and the rerun redoes them identically.

The training loop runs unchanged under ``torchrun`` (see :mod:`rmaat_model.distributed`):
``batch_size`` is the global batch, split evenly over the processes.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from astro_rmaat import runs
from astro_rmaat.config import from_dict, require_positive, to_dict
from astro_rmaat.errors import ConfigError, DataError, RunExistsError
from rmaat_model import distributed as D
from rmaat_model.amrb import forward_backward
from rmaat_model.data.base import TASKS, TaskSpec, collate, load_split
from rmaat_model.model import ModelConfig, build_model

CKPT_FILE = "ckpt.pt"
MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
METRICS_FILE = "metrics.csv"
RESULTS_FILE = "results.json"
CKPT_FORMAT = "rmaat.train-ckpt/v1"
TIMING_FILE = "timing.json"   # wall-clock seconds of an unfinished run (moved into meta.json)
METRIC_COLUMNS = ("step", "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc",
                  "best_val_acc")
#: ModelConfig fields that come from the task, not from the user
TASK_FIELDS = ("vocab_size", "n_classes", "max_len", "pad_id", "head")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3                  # peak learning rate (reached after warm-up)
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW (beta1, beta2)
    eps: float = 1e-8                 # AdamW epsilon
    weight_decay: float = 0.01        # decoupled weight decay on matrices (not on biases, norms)
    retention_lr: float = 1e-2        # peak lr of a `learned` retention schedule (no weight decay)
    warmup_steps: int = 100           # linear warm-up from 0 to lr, optimiser steps
    min_lr_ratio: float = 0.1         # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0            # max global gradient L2 norm; 0 disables clipping

    def __post_init__(self) -> None:
        require_positive("optim.lr", self.lr)
        require_positive("optim.retention_lr", self.retention_lr)
        for i, b in enumerate(self.betas):
            if not 0.0 <= b < 1.0:
                raise ConfigError(f"optim.betas[{i}] = {b!r}: expected 0 <= beta < 1")
        require_positive("optim.eps", self.eps)
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay = {self.weight_decay!r}: expected >= 0")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps = {self.warmup_steps!r}: expected >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio = {self.min_lr_ratio!r}: expected 0..1")
        if self.grad_clip < 0:
            raise ConfigError(f"optim.grad_clip = {self.grad_clip!r}: expected >= 0 (0 = off)")


@dataclass(frozen=True)
class TrainConfig:
    task: str = "listops"             # LRA task ('listops', 'text', 'retrieval', 'image',
                                      # 'pathfinder') or the synthetic 'recall' and 'assoc'
    data_dir: str | None = None       # directory with the task's files (unused for 'recall', 'assoc')
    assoc_pairs: int = 4              # 'assoc': key -> value pairs per example (K)
    recall_min_segments: int | None = None  # 'recall': lengths vary from this many segments of
                                      # model.segment_len to max_len (None: every sequence max_len)
    max_len: int | None = None        # sequence length, tokens; None = the task's LRA length
    truncate: bool = False            # allow a max_len shorter than the data's sequences (cut)
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture; the task
                                      # fields (vocab_size, n_classes, max_len, pad_id, head)
                                      # are filled from the data, whatever is set here
    method: Literal["amrb", "bptt", "tbptt"] = "amrb"  # gradient through the segments
    tbptt_k: int = 2                  # segments back-propagated through with method 'tbptt'
    optim: OptimConfig = field(default_factory=OptimConfig)  # AdamW + warm-up/cosine + clip
    batch_size: int = 32              # global batch (all processes together), sequences
    steps: int = 1000                 # optimiser steps in the whole run
    eval_every: int = 100             # steps between evaluations (each also checkpoints)
    ckpt_every: int | None = None     # steps between checkpoints besides evaluations; None = off
    ckpt_minutes: float | None = 2.0  # wall-clock minutes of work between checkpoints; None =
                                      # off. A kill loses at most the work since the last one
    eval_batches: int | None = None   # cap on validation batches per evaluation; None = all
    eval_batch_size: int | None = None  # sequences per evaluation batch; None = batch_size
    seed: int = 0                     # seeds model init, data order and dropout (+ rank)
    max_minutes: float | None = None  # wall-clock budget over all sessions, minutes; the run
                                      # stops early (and still finishes) when it is spent
    num_workers: int = 0              # DataLoader worker processes per rank
    device: Literal["auto", "cpu", "cuda"] = "auto"  # 'auto' = CUDA when available
    threads: int | None = None        # CPU intra-op threads per process; None: 1 (this project's models
                                      # are small: 2 threads on a busy 2-core machine ran the demo's
                                      # ListOps step 15x slower than 1, bench/train_step_speed.py)
    compile: bool = False             # run the block stack through torch.compile (RMAAT.compile_blocks):
                                      # a one-off compile of 20-40 s, then fewer, fused operations
                                      # (bench/throughput.py --compile measures it); same numbers to round-off
    tensorboard: bool = False         # also write TensorBoard events to tb/ (needs tensorboard)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task = {self.task!r}: unknown task; expected one of "
                              f"{', '.join(TASKS)}")
        for name in ("steps", "eval_every", "batch_size", "tbptt_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} = {value!r}: expected a positive integer")
        for name in ("max_len", "eval_batches", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(f"{name} = {value!r}: expected a positive integer or null")
        if self.max_minutes is not None:
            require_positive("max_minutes", self.max_minutes, "min")
        if self.ckpt_minutes is not None:
            require_positive("ckpt_minutes", self.ckpt_minutes, "min")
        if self.ckpt_every is not None and (isinstance(self.ckpt_every, bool)
                                            or not isinstance(self.ckpt_every, int)
                                            or self.ckpt_every < 1):
            raise ConfigError(f"ckpt_every = {self.ckpt_every!r}: expected a positive integer or null")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers = {self.num_workers!r}: expected >= 0")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ConfigError(f"threads = {self.threads!r}: expected a positive integer or null (1)")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile = {self.compile!r}: expected true or false")
        if self.task == "assoc":   # the layout must hold the pairs: checked before any file
            from rmaat_model.data import assoc
            assoc.check_layout(self.max_len or assoc.DEFAULT_MAX_LEN, self.model.segment_len,
                               self.assoc_pairs)
        if self.recall_min_segments is not None:
            if self.task != "recall":
                raise ConfigError(f"recall_min_segments = {self.recall_min_segments!r} applies to task "
                                  f"'recall' only (task is {self.task!r}); leave it null")
            from rmaat_model.data.synthetic import DEFAULT_MAX_LEN, check_varying
            check_varying(self.max_len or DEFAULT_MAX_LEN, self.model.segment_len, self.recall_min_segments)


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return to_dict(cfg)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return from_dict(TrainConfig, data)


# --------------------------------------------------------------------------- building blocks
def model_config_for(cfg: TrainConfig, spec: TaskSpec) -> ModelConfig:
    """The user's architecture with the task's vocabulary, classes, length and head.

    A task field the user set in ``model`` that disagrees with the task is refused, not
    silently replaced (``model.max_len``: set the top-level ``max_len`` instead).
    """
    task = {"vocab_size": spec.vocab_size, "n_classes": spec.n_classes, "max_len": spec.max_len,
            "pad_id": spec.pad_id, "head": "match" if spec.pair else "cls"}
    default = ModelConfig()
    for name in TASK_FIELDS:
        value = getattr(cfg.model, name)
        if value != getattr(default, name) and value != task[name]:
            hint = "; set the top-level max_len instead" if name == "max_len" else ""
            raise ConfigError(f"model.{name} = {value!r}: the {cfg.task} task sets it to "
                              f"{task[name]!r}; leave it unset{hint}")
    return dataclasses.replace(cfg.model, vocab_size=spec.vocab_size, n_classes=spec.n_classes,
                               max_len=spec.max_len, pad_id=spec.pad_id,
                               head="match" if spec.pair else "cls")


def load_data(cfg: TrainConfig, splits=("train", "val", "test")) -> tuple[TaskSpec, dict]:
    """Load every split up front, so a missing file stops the run before it writes anything."""
    data, spec = {}, None
    options = {}
    if cfg.task == "assoc":
        options = {"segment_len": cfg.model.segment_len, "pairs": cfg.assoc_pairs}
    elif cfg.task == "recall" and cfg.recall_min_segments is not None:
        options = {"segment_len": cfg.model.segment_len, "min_segments": cfg.recall_min_segments}
    for split in splits:
        spec, data[split] = load_split(cfg.task, cfg.data_dir, split, cfg.max_len, **options)
        if len(data[split]) == 0:
            raise DataError(f"{cfg.task} {split} split in {cfg.data_dir!r} is empty; "
                            "expected at least one example")
        longest = longest_sequence(data[split])
        if cfg.max_len is not None and longest is not None and longest > cfg.max_len \
                and not cfg.truncate:
            raise ConfigError(f"max_len = {cfg.max_len}: the {cfg.task} {split} split holds "
                              f"sequences of up to {longest} tokens, which would be cut; expected "
                              f"max_len >= {longest}, or set truncate=true to cut them")
    return spec, data


def longest_sequence(dataset) -> int | None:
    """The longest stored sequence, where a dataset keeps its lengths (ListOps); else None."""
    offsets = getattr(dataset, "offsets", None)
    if offsets is None or len(offsets) < 2:
        return None
    return int(np.max(np.diff(offsets)))


def param_groups(model: torch.nn.Module, optim: OptimConfig) -> list[dict[str, Any]]:
    """AdamW groups from the model (``RMAAT.param_groups``): matrices with weight decay;
    biases, norms and the initial memory without; a ``learned`` retention table in its own
    group at ``retention_lr`` without weight decay. Each group is named for the logs."""
    groups = D.unwrap(model).param_groups(optim.lr, optim.weight_decay, optim.retention_lr)
    for group, name in zip(groups, ("decay", "no_decay", "retention")):
        group["name"] = name
    return [g for g in groups if g["params"]]


class WarmupCosine:
    """lr multiplier: linear warm-up over ``warmup`` steps, then cosine to ``floor``."""

    def __init__(self, warmup: int, total: int, floor: float) -> None:
        self.warmup, self.total, self.floor = warmup, total, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig):
    opt = torch.optim.AdamW(param_groups(model, cfg.optim), lr=cfg.optim.lr,
                            betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, WarmupCosine(cfg.optim.warmup_steps, cfg.steps, cfg.optim.min_lr_ratio))
    return opt, sched


def batch_to(batch: dict[str, torch.Tensor], device: torch.device):
    tokens = batch["tokens"].to(device, non_blocking=True)
    labels = batch["label"].to(device, non_blocking=True)
    tokens2 = batch["tokens2"].to(device, non_blocking=True) if "tokens2" in batch else None
    return tokens, labels, tokens2


@torch.no_grad()
def evaluate_dataset(model: torch.nn.Module, dataset, *, batch_size: int, pad_id: int,
                     env: D.DistEnv | None = None, max_batches: int | None = None,
                     num_workers: int = 0, progress: bool = False) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``dataset`` (sharded over ranks).

    With ``max_batches`` only the first ``max_batches * batch_size`` examples count.
    """
    env = env or D.DistEnv()
    n = len(dataset)
    if max_batches is not None:
        n = min(n, max_batches * batch_size)
    loader = DataLoader(Subset(dataset, D.shard(n, env)), batch_size=max(1, batch_size // env.world_size),
                        shuffle=False, num_workers=num_workers,
                        collate_fn=functools.partial(collate, pad_id=pad_id),
                        generator=torch.Generator())
    was_training = model.training
    model.eval()
    loss_sum = correct = count = 0.0
    it = loader
    if progress and env.is_main:
        from tqdm import tqdm
        it = tqdm(loader, desc="eval", leave=False, mininterval=1.0)
    for batch in it:
        tokens, labels, tokens2 = batch_to(batch, env.device)
        logits = model(tokens) if tokens2 is None else model(tokens, tokens2)
        loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        correct += float((logits.argmax(-1) == labels).sum())
        count += labels.numel()
    model.train(was_training)
    loss_sum, correct, count = D.all_reduce_sum([loss_sum, correct, count], env)
    if count == 0:
        raise DataError("evaluation set is empty")
    return {"loss": loss_sum / count, "acc": correct / count, "n": int(count)}


def dataset_labels(dataset) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64).reshape(-1)
    return np.asarray([int(dataset[i]["label"]) for i in range(len(dataset))], dtype=np.int64)


def majority_baseline(train_ds, eval_sets: dict[str, Any]) -> dict[str, Any]:
    """Accuracy of always answering the most frequent training label."""
    labels = dataset_labels(train_ds)
    majority = int(np.bincount(labels).argmax())
    out: dict[str, Any] = {"class": majority}
    for split, ds in eval_sets.items():
        out[f"{split}_acc"] = float(np.mean(dataset_labels(ds) == majority))
    return out


# --------------------------------------------------------------------------- RNG + checkpoint
def rng_state() -> dict[str, Any]:
    """Every RNG the step touches, as tensors and plain lists (loadable with weights_only)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                       int(np_state[2]), int(np_state[3]), float(np_state[4])],
             "python": [py_state[0], list(py_state[1]), py_state[2]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """safetensors weights carrying their ModelConfig (+ ``*.config.json`` beside them),
    written atomically by :func:`rmaat_model.checkpoint.save`."""
    from rmaat_model import checkpoint
    checkpoint.save(D.unwrap(model), None, path)


def load_weights(run_dir: str | Path, name: str = BEST_FILE,
                 device: torch.device | str = "cpu") -> torch.nn.Module:
    """Rebuild a run's model from the weights file ``name`` (config read from the file)."""
    from rmaat_model import checkpoint
    model, _ = checkpoint.load(Path(run_dir) / name, map_location=device)
    return model


def _interned(obj: Any) -> Any:
    """``obj`` with every string interned: pickle memoises a string per object, so equal
    strings that are shared in one run and separate in a resumed one gave different bytes."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {_interned(k): _interned(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_interned(v) for v in obj)
    return obj


def save_ckpt(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(_interned(state), buf)
    runs.atomic_write_bytes(path, buf.getvalue())


def load_ckpt(path: Path) -> dict[str, Any]:
    """Read ``ckpt.pt``; an unreadable or foreign file is one clear DataError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
        raise DataError(f"checkpoint {str(path)!r} is corrupted or unreadable "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                        "delete it to restart the run from step 0, or use a new --out") from None
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise DataError(f"checkpoint {str(path)!r} is not a {CKPT_FORMAT} training checkpoint; "
                        "delete it to restart the run from step 0, or use a new --out")
    return state


def read_timing(run_dir: Path) -> dict[str, Any]:
    """Wall-clock seconds of an unfinished run (``timing.json``); empty when absent/unreadable."""
    try:
        data = json.loads((run_dir / TIMING_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in METRIC_COLUMNS})
    runs.atomic_write_text(path, buf.getvalue())


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """``metrics.csv`` of a run as a list of rows of floats."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise DataError(f"{str(path)!r} does not exist; is {str(run_dir)!r} a training run?")
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


# --------------------------------------------------------------------------- the entry point
def train(cfg: TrainConfig, out_dir: str | Path, *, stop_after: int | None = None,
          progress: bool = True) -> Path:
    """Train ``cfg`` into ``out_dir`` (new, or an interrupted run of the same config).

    ``stop_after``: leave the run interrupted (checkpoint written, no ``meta.json``) after
    this many optimiser steps in this call — for chunked jobs on time-limited schedulers,
    and for the resume tests. Returns ``out_dir``.
    """
    out = Path(out_dir)
    env = D.setup(cfg.device)
    try:
        return _train(cfg, out, env, stop_after=stop_after, progress=progress)
    finally:
        runs.release_run_dir(out)   # an interrupted run can be resumed by another process
        D.teardown(env)


def _refuse_finished(out: Path) -> None:
    runs.check_out_dir(out)   # finished, not a directory, or not writable: refused up front


def _train(cfg: TrainConfig, out: Path, env: D.DistEnv, *, stop_after: int | None,
           progress: bool) -> Path:
    t_session = time.perf_counter()
    # 1. inputs first: nothing is written for an unknown task or a missing file
    D.raise_together(env, _refuse_finished, out)
    spec, data = load_data(cfg)
    mcfg = model_config_for(cfg, spec)
    seed_everything(cfg.seed)                 # identical initial weights on every rank
    model = build_model(mcfg).to(env.device)
    if cfg.compile:
        model.compile_blocks()
    optimizer, scheduler = make_optimizer(model, cfg)
    tb = None
    if cfg.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tensorboard = true but the tensorboard package is not installed; "
                              "pip install 'astro-rmaat[tensorboard]' or set tensorboard=false") from None
    # 2. the run directory (rank 0), refused or resumed
    D.raise_together(env, runs.prepare_run_dir, out, config_dict(cfg))
    ckpt_path = out / CKPT_FILE
    resume = D.broadcast_object(ckpt_path.is_file() if env.is_main else None, env)
    step, elapsed_before, rows = 0, 0.0, []
    best = {"val_acc": -1.0, "step": -1}
    window = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    timing = read_timing(out) if resume else {}
    eval_times = list(timing.get("eval_elapsed_s", []))
    if resume:
        state = load_ckpt(ckpt_path)
        if state["config"] != config_dict(cfg):
            raise RunExistsError(f"{str(ckpt_path)!r} was written by a different config; "
                                 "use a new --out directory")
        if state["world_size"] != env.world_size:
            raise ConfigError(f"{str(ckpt_path)!r} was written by {state['world_size']} "
                              f"process(es); resume it with the same number (now {env.world_size})")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, elapsed_before = int(state["step"]), timing.get("elapsed_s", 0.0)
        rows, best = list(state["metrics"]), dict(state["best"])
        window = dict(state["window"][env.rank])
        set_rng_state(state["rng"][env.rank])
    else:
        torch.manual_seed(cfg.seed + 1_000_003 * env.rank)   # per-rank dropout streams
    ddp = D.wrap(model, env)
    raw = D.unwrap(ddp)
    if cfg.tensorboard and env.is_main:
        tb = SummaryWriter(log_dir=str(out / "tb"), purge_step=step)

    sampler = D.StepBatchSampler(len(data["train"]), cfg.batch_size, cfg.seed, env,
                                 start=step, stop=cfg.steps)
    loader = DataLoader(data["train"], batch_sampler=sampler, num_workers=cfg.num_workers,
                        collate_fn=functools.partial(collate, pad_id=spec.pad_id),
                        generator=torch.Generator(), pin_memory=env.device.type == "cuda")
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    budget_s = cfg.max_minutes * 60.0 if cfg.max_minutes is not None else math.inf

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t_session

    last_ckpt = time.perf_counter()
    ckpt_s = cfg.ckpt_minutes * 60.0 if cfg.ckpt_minutes is not None else math.inf

    def checkpoint() -> None:
        nonlocal last_ckpt
        last_ckpt = time.perf_counter()
        per_rank = D.gather_objects({"rng": rng_state(), "window": dict(window)}, env)
        if not env.is_main:
            return
        save_weights(out / MODEL_FILE, raw)
        save_ckpt(ckpt_path, {
            "format": CKPT_FORMAT, "config": config_dict(cfg), "world_size": env.world_size,
            "step": step, "model": raw.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": [r["rng"] for r in per_rank], "window": [r["window"] for r in per_rank],
            "best": best, "metrics": rows})
        runs.atomic_write_json(out / TIMING_FILE, {"elapsed_s": round(elapsed(), 3),
                                                   "eval_elapsed_s": eval_times})

    def run_eval() -> None:
        nonlocal window
        res = evaluate_dataset(raw, data["val"], batch_size=eval_bs, pad_id=spec.pad_id, env=env,
                               max_batches=cfg.eval_batches, num_workers=cfg.num_workers)
        if res["acc"] > best["val_acc"]:
            best.update(val_acc=res["acc"], step=step)
            if env.is_main:
                save_weights(out / BEST_FILE, raw)
        count = max(window["count"], 1.0)
        row = {"step": step, "epoch": round(step / sampler.per_epoch, 4),
               "lr": optimizer.param_groups[0]["lr"],
               "train_loss": window["loss"] / count if window["count"] else float("nan"),
               "train_acc": window["correct"] / count if window["count"] else float("nan"),
               "val_loss": res["loss"], "val_acc": res["acc"], "best_val_acc": best["val_acc"]}
        rows.append(row)
        eval_times.append(round(elapsed(), 3))
        window = {"loss": 0.0, "correct": 0.0, "count": 0.0}
        if env.is_main:
            write_metrics(out / METRICS_FILE, rows)
            if tb is not None:
                for k in ("lr", "train_loss", "train_acc", "val_loss", "val_acc"):
                    tb.add_scalar(k, row[k], step)
                tb.flush()

    if env.is_main and rows:
        write_metrics(out / METRICS_FILE, rows)   # rows up to the checkpoint are the truth
    bar = None
    if progress and env.is_main:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.task}/{mcfg.arch}",
                   unit="step", mininterval=1.0, file=sys.stderr)
    session_steps, interrupted = 0, False
    ddp.train()
    for batch in loader:
        tokens, labels, tokens2 = batch_to(batch, env.device)
        with D.no_sync(ddp):
            loss, logits = forward_backward(raw, tokens, labels, method=cfg.method,
                                            k=cfg.tbptt_k if cfg.method == "tbptt" else None,
                                            tokens2=tokens2)
        D.average_gradients(raw.parameters(), env)
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        session_steps += 1
        n = labels.numel()
        window["loss"] += float(loss) * n
        window["correct"] += float((logits.argmax(-1) == labels).sum())
        window["count"] += n
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3f}", best=f"{max(best['val_acc'], 0):.3f}",
                            refresh=False)
        out_of_time, ckpt_due = D.broadcast_object(
            (elapsed() > budget_s, time.perf_counter() - last_ckpt > ckpt_s)
            if env.is_main else None, env)
        ckpt_due = ckpt_due or (cfg.ckpt_every is not None and step % cfg.ckpt_every == 0)
        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
            # gather this window's train loss/acc from all ranks before logging
            window.update(zip(("loss", "correct", "count"),
                              D.all_reduce_sum([window["loss"], window["correct"],
                                                window["count"]], env)))
            run_eval()
            checkpoint()
        elif ckpt_due:
            checkpoint()   # mid-window: the window sums travel in the checkpoint
        if out_of_time:
            break
        if stop_after is not None and session_steps >= stop_after and step < cfg.steps:
            if step % cfg.eval_every:
                checkpoint()   # mid-window: the window sums travel in the checkpoint
            interrupted = True
            break
    if bar is not None:
        bar.close()
    if interrupted:
        if tb is not None:
            tb.close()
        D.barrier(env)
        return out
    if step == 0 or not rows or rows[-1]["step"] != step:
        run_eval()
        checkpoint()

    # 3. the best-on-validation weights, evaluated on val and test
    results = final_results(out, cfg, spec, data, env, best, step)
    if env.is_main:
        runs.atomic_write_json(out / RESULTS_FILE, results)
        runs.finish_run(out, runs.make_meta(
            stage="train", seed=cfg.seed, wall_time_s=elapsed(),
            packages=("torch", "safetensors"), world_size=env.world_size,
            device=str(env.device), steps_done=step, results=results,
            eval_steps=[int(r["step"]) for r in rows], eval_elapsed_s=eval_times))
        (out / TIMING_FILE).unlink(missing_ok=True)   # wall times now live in meta.json
        if tb is not None:
            tb.close()
    D.barrier(env)
    return out


def final_results(out: Path, cfg: TrainConfig, spec: TaskSpec, data: dict, env: D.DistEnv,
                  best: dict, step: int) -> dict[str, Any]:
    D.barrier(env)   # best.safetensors is complete before anyone reads it
    model = load_weights(out, BEST_FILE, env.device)
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    res: dict[str, Any] = {"best_step": int(best["step"]), "steps_done": step,
                           "checkpoint": BEST_FILE}
    for split in ("val", "test"):
        r = evaluate_dataset(model, data[split], batch_size=eval_bs, pad_id=spec.pad_id, env=env,
                             num_workers=cfg.num_workers)
        res[f"{split}_acc"], res[f"{split}_loss"], res[f"n_{split}"] = r["acc"], r["loss"], r["n"]
    res["majority"] = majority_baseline(data["train"], {"val": data["val"], "test": data["test"]})
    return res
