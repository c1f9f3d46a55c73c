"""Evaluation: a model on a dataset (``evaluate_dataset``, the ``majority_baseline``), and a
training run re-evaluated from its files alone (``evaluate(run_dir, split="test")``, the
``rmaat evaluate`` verb).

``evaluate`` reads ``config.json`` (task, data directory, length, batch size) and the weights
file (``best.safetensors`` by default — the checkpoint a finished run reports — or the latest
``model.safetensors``), rebuilds the model from the ModelConfig stored beside the weights,
and measures loss and accuracy on one split. Nothing in the run directory is written.
"""

from __future__ import annotations

import collections
import functools
from concurrent import futures
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from astro_rmaat import runs
from astro_rmaat.config import from_dict, read_json_file
from astro_rmaat.errors import ConfigError, DataError
from rmaat_model import distributed as D
from rmaat_model.checkpoint import BEST_FILE, MODEL_FILE, load_weights
from rmaat_model.data.base import batch_to, check_split, collate, load_split
from rmaat_model.metrics import read_metrics
from rmaat_model.shards import threads_each
from rmaat_model.train_config import TrainConfig, parallel_threads


@torch.inference_mode()
def evaluate_dataset(model: torch.nn.Module, dataset, *, batch_size: int, pad_id: int,
                     env: D.DistEnv | None = None, max_batches: int | None = None,
                     num_workers: int = 0, progress: bool = False, threads: int = 1) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``dataset`` (sharded over ranks).

    With ``max_batches`` only the first ``max_batches * batch_size`` examples count.
    ``threads`` > 1: that many batches at once, each on a thread of its own with an equal part of
    torch's intra-op threads (at least one); each batch is computed as it is alone and the sums
    are taken in batch order, so the result is the one thread's with that many intra-op threads
    (a training run with batch shards evaluates this way, rmaat_model.shards).
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
    def one(batch) -> tuple[float, float, int]:
        tokens, labels, tokens2 = batch_to(batch, env.device)
        logits = model(tokens) if tokens2 is None else model(tokens, tokens2)
        return (float(F.cross_entropy(logits.float(), labels, reduction="sum")),
                float((logits.argmax(-1) == labels).sum()), labels.numel())

    try:
        for loss, right, n_batch in _in_order(one, it, threads):
            loss_sum += loss
            correct += right
            count += n_batch
    finally:
        model.train(was_training)
    loss_sum, correct, count = D.all_reduce_sum([loss_sum, correct, count], env)
    if count == 0:
        raise DataError("evaluation set is empty")
    return {"loss": loss_sum / count, "acc": correct / count, "n": int(count)}


def _in_order(fn, items, threads: int):
    """fn(item) for each item, yielded in order; with threads > 1 up to that many at once on
    worker threads, each in inference mode with torch's intra-op threads split between them."""
    if threads <= 1:
        yield from map(fn, items)
        return
    per = threads_each(threads)

    def run(item):
        torch.set_num_threads(per)   # this thread's own count
        with torch.inference_mode():
            return fn(item)

    pending: collections.deque = collections.deque()
    with futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rmaat-eval") as pool:
        try:
            for item in items:
                if len(pending) == threads:
                    yield pending.popleft().result()
                pending.append(pool.submit(run, item))
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:   # an error (or a consumer that stopped): none left running
                f.cancel()
            futures.wait(pending)


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


def evaluate(run_dir: str | Path, split: str = "test", *, weights: Literal["best", "last"] = "best",
             data_dir: str | Path | None = None, batch_size: int | None = None,
             device: str = "auto", progress: bool = False) -> dict[str, Any]:
    """Loss and accuracy of a run's ``weights`` on ``split``.

    ``data_dir`` replaces the directory stored in the run's config (data moved since).
    Returns ``{"split", "weights", "loss", "acc", "n", "step"...}``.
    """
    run = Path(run_dir)
    check_split(split)
    if weights not in ("best", "last"):
        raise ConfigError(f"weights = {weights!r}: expected 'best' or 'last'")
    cfg_path = run / runs.CONFIG_FILE
    if not cfg_path.is_file():
        raise DataError(f"{str(run)!r} is not a training run: {runs.CONFIG_FILE} is missing")
    cfg = from_dict(TrainConfig, read_json_file(cfg_path, "run config"))
    wpath = run / (BEST_FILE if weights == "best" else MODEL_FILE)
    if not wpath.is_file():
        raise DataError(f"{str(wpath)!r} does not exist; the run has not evaluated yet "
                        "(train it first, or resume it with 'rmaat train' and the same config)")
    spec, dataset = load_split(cfg.task, data_dir if data_dir is not None else cfg.data_dir,
                               split, cfg.max_len)
    dev = D.pick_device(device)
    model = load_weights(run, wpath.name, dev)
    mcfg = model.cfg
    if (mcfg.vocab_size, mcfg.n_classes) != (spec.vocab_size, spec.n_classes):
        raise DataError(f"{str(wpath)!r} was trained for vocab {mcfg.vocab_size} / "
                        f"{mcfg.n_classes} classes but {cfg.task} data has "
                        f"{spec.vocab_size} / {spec.n_classes}")
    bs = batch_size or cfg.eval_batch_size or cfg.batch_size
    res = evaluate_dataset(model, dataset, batch_size=bs, pad_id=spec.pad_id,
                           env=D.DistEnv(device=dev), progress=progress,
                           threads=parallel_threads(cfg) if dev.type == "cpu" else 1)
    return {"run": str(run), "split": split, "weights": wpath.name, "task": cfg.task,
            "arch": mcfg.arch, **res}


def plot_learning_curves(runs_by_label: dict[str, str | Path], column: str = "val_acc", ax=None,
                         chance: float | None = None):
    """``column`` of ``metrics.csv`` against step, one line per run; returns ``ax``."""
    from astro_rmaat.style import new_axes, plot_style
    with plot_style():
        ax = new_axes(ax)
        for label, run in runs_by_label.items():
            rows = read_metrics(run)
            ax.plot([r["step"] for r in rows], [r[column] for r in rows], marker="o", label=label)
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", label="chance")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(column.replace("_", " "))
        ax.legend()
    return ax


def predictions(model, dataset, *, batch_size: int = 256) -> torch.Tensor:
    """(n,) the class ``model`` predicts for every example of ``dataset`` (evaluation mode, no
    graph; the model's training mode is restored)."""
    was_training = model.training
    model.eval()
    out = torch.empty(len(dataset), dtype=torch.int64)
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            out[start:start + batch_size] = model(dataset.tokens[start:start + batch_size]).argmax(-1)
    model.train(was_training)
    return out


def accuracy_by_age(model, dataset, *, batch_size: int = 256,
                    predicted: torch.Tensor | None = None) -> dict[int, dict[str, float]]:
    """Accuracy of ``model`` on a dataset whose examples carry an ``ages`` tensor (``assoc``):
    ``{age: {"acc": ..., "n": ...}}``, ages in segments between the fact and the query — the
    model's forgetting curve. ``predicted``: the model's ``predictions`` on ``dataset``, when
    already at hand."""
    ages = getattr(dataset, "ages", None)
    if ages is None:
        raise DataError("accuracy by age needs a dataset with ages (task 'assoc')")
    if predicted is None:
        predicted = predictions(model, dataset, batch_size=batch_size)
    correct = predicted == dataset.labels
    out = {}
    for age in sorted(set(ages.tolist())):
        sel = ages == age
        out[int(age)] = {"acc": float(correct[sel].float().mean()), "n": int(sel.sum())}
    return out
