"""Training: ``train(cfg, out_dir)`` turns a :class:`TrainConfig` into a finished run directory.

A run directory holds::

    config.json         the TrainConfig (written first; the key to resuming)
    metrics.csv         one row per evaluation (step, lr, train/val loss and accuracy;
                        rmaat_model.metrics writes and reads it)
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

The file names and the checkpoint formats live in rmaat_model.checkpoint. Every file is
written atomically. Rerunning the same config on an interrupted directory resumes from
``ckpt.pt`` and ends with the same weights and metrics as an uninterrupted run; a different
config is refused; a finished run is never overwritten. The same config and seed give the
same bytes in every file but ``meta.json`` (the only home of wall times).

``ckpt.pt`` is written at every evaluation, every ``ckpt_every`` steps, and after each
``ckpt_minutes`` of work (default 2), whichever comes first; a kill (even ``kill -9``)
loses only the steps since the last checkpoint, and the rerun redoes them identically.

The training loop runs unchanged under ``torchrun`` (see :mod:`rmaat_model.distributed`):
``batch_size`` is the global batch, split evenly over the processes.
"""

from __future__ import annotations

import functools
import math
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from astro_rmaat import resources, runs
from astro_rmaat.config import to_dict
from astro_rmaat.errors import ConfigError
from astro_rmaat.workers import check_local_workers
from rmaat_model import checkpoint
from rmaat_model import distributed as D
from rmaat_model import native
from rmaat_model import shards as batch_shards
from rmaat_model.amrb import forward_backward
from rmaat_model.blocks import runs_fused
from rmaat_model.checkpoint import BEST_FILE, CKPT_FILE, MODEL_FILE, TIMING_FILE
from rmaat_model.data.base import batch_to, collate
from rmaat_model.evaluate import evaluate_dataset, majority_baseline
from rmaat_model.interrupts import StopRequests
from rmaat_model.metrics import METRICS_FILE, write_metrics
from rmaat_model.model import build_model, footprint
from rmaat_model.model_config import ModelConfig
from rmaat_model.optim import make_optimizer
from rmaat_model.train_config import (RESUME_FREE, TrainConfig, load_data, model_config_for, parallel_threads,
                                      stored_config)

RESULTS_FILE = "results.json"


def train(cfg: TrainConfig, out_dir: str | Path, *, stop_after: int | None = None,
          progress: bool = True) -> Path:
    """Train ``cfg`` into ``out_dir`` (new, or an interrupted run of the same config).

    ``stop_after``: leave the run interrupted (checkpoint written, no ``meta.json``) after
    this many optimiser steps in this call — for chunked jobs on time-limited schedulers,
    and for the resume tests. Returns ``out_dir``.
    """
    out = Path(out_dir)
    env = D.setup(cfg.device)
    threads_before = torch.get_num_threads()
    if env.device.type == "cpu":
        torch.set_num_threads(cfg.threads or 1)    # TrainConfig.threads; None: one per process
    trainer = None
    try:
        trainer = Trainer(cfg, out, env, progress=progress)
        if trainer.run(stop_after):
            trainer.leave_interrupted()
        else:
            trainer.finish()
        return out
    except BaseException as exc:
        if env.distributed:
            # the tracebacks' finished frames (of this error and of those it was raised from or
            # while handling) hold the trainer (``self``) and with it the DDP wrapper: their
            # locals go now, so that the wrapper goes before the group below, as on the normal
            # path (the errors and where they happened are kept)
            todo, seen = [exc], set()
            while todo:
                e = todo.pop()
                if e is not None and id(e) not in seen:
                    seen.add(id(e))
                    traceback.clear_frames(e.__traceback__)
                    todo += [e.__cause__, e.__context__]
        raise
    finally:
        torch.set_num_threads(threads_before)
        runs.release_run_dir(out)   # an interrupted run can be resumed by another process
        # the DDP wrapper (its reducer holds the process group) goes before the group does, so
        # the group's threads are joined here, not at interpreter exit (findings.md: a gloo
        # worker's rare abort at exit)
        del trainer
        D.teardown(env)


#: float32 copies of every parameter a training step holds: the weights, their gradients and
#: AdamW's two moments
PARAMETER_COPIES = 4


def device_memory_bytes(device: torch.device) -> int | None:
    """The memory of ``device``: a GPU's own, else what this process may use
    (``resources.memory_limit_bytes``); None when the system does not say."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return resources.memory_limit_bytes()


def check_fits_memory(mcfg: ModelConfig, device: torch.device) -> None:
    """Refuse a model whose weights, gradients, AdamW state and buffers alone (float32) exceed
    ``device``'s memory, naming its sizes, before anything is allocated or written: built,
    it would end in an allocation error or in the kernel's out-of-memory kill. Activations
    come on top, so passing is no promise that a step fits."""
    have = device_memory_bytes(device)
    if have is None:
        return
    fp = footprint(mcfg)
    need = (PARAMETER_COPIES * fp.parameters + fp.buffers) * 4
    if need > have:
        sizes = ", ".join(f"{k} = {getattr(mcfg, k)}" for k in ("d_model", "d_ff", "n_layers", "n_mem",
                                                                   "vocab_size", "max_len"))
        name, shape = fp.largest
        raise ConfigError(f"model ({sizes}): {fp.parameters:,} parameters and {fp.buffers:,} buffer values "
                          f"need {need / 2**30:,.1f} GiB as float32 weights, gradients and AdamW state, "
                          f"more than the {have / 2**30:.1f} GiB of memory on {device.type}; "
                          f"the largest tensor is {name} {tuple(shape)}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _empty_window() -> dict[str, float]:
    """Sums of the training loss, correct answers and examples since the last evaluation."""
    return {"loss": 0.0, "correct": 0.0, "count": 0.0}


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("tensorboard = true but the tensorboard package is not installed; "
                          "pip install 'astro-rmaat[tensorboard]' or set tensorboard=false") from None
    return SummaryWriter


class Trainer:
    """One session of a training run. Construction sets it up: the inputs are checked before
    anything is written, then the run directory is created (or resumed from ``ckpt.pt``);
    ``run`` takes the optimiser steps, evaluating and checkpointing on the run's cadences;
    ``finish`` evaluates the best weights and closes the run, ``leave_interrupted`` leaves it
    to be resumed."""

    def __init__(self, cfg: TrainConfig, out: Path, env: D.DistEnv, *, progress: bool) -> None:
        self.t_session = time.perf_counter()
        self.cfg, self.out, self.env = cfg, out, env
        self._build()
        self._open_run_dir()
        self._make_loader()
        if env.is_main and self.rows:
            write_metrics(out / METRICS_FILE, self.rows)   # rows up to the checkpoint are the truth
        self.bar = None
        if progress and env.is_main:
            from tqdm import tqdm
            self.bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.task}/{self.mcfg.arch}",
                            unit="step", mininterval=1.0, file=sys.stderr)

    # -- setup ----------------------------------------------------------------------------
    def _build(self) -> None:
        """Inputs first: nothing is written for an unknown task or a missing file."""
        cfg, env = self.cfg, self.env
        D.raise_together(env, runs.check_out_dir, self.out)   # finished, not a directory, or not writable
        check_local_workers("num_workers", cfg.num_workers, "DataLoader processes")
        if cfg.amrb_overlap and env.device.type != "cpu":
            raise ConfigError(f"amrb_overlap = true splits CPU threads; the device is {env.device.type} "
                              "(set amrb_overlap = false)")
        batch_shards.check(cfg.shards, device=env.device)
        self.spec, self.data = load_data(cfg)
        self.mcfg = model_config_for(cfg, self.spec)
        D.raise_together(env, check_fits_memory, self.mcfg, env.device)   # before a size is tried
        seed_everything(cfg.seed)                 # identical initial weights on every rank
        self.model = build_model(self.mcfg).to(env.device)
        if cfg.compile:
            self.model.compile_blocks()
        block = not cfg.compile and cfg.precision == "fp32" and runs_fused(self.mcfg)   # else the Python block
        # on the CPU the dropout draw (kernels.dropout_masks, every arch and precision) and
        # AdamW's step (optim.AdamW, float32 weights, which every precision keeps) use it too
        if block or env.device.type == "cpu":
            # the C++ extension, built (or loaded) by every rank once the inputs are checked
            # and before anything is written, not inside the first step; a first build's time
            # is kept off the run's clock. RMAAT_NATIVE is checked also where an earlier run
            # loaded it.
            native.mode()
            t0 = time.perf_counter()
            native.extension()
            self.t_session += time.perf_counter() - t0
        self.optimizer, self.scheduler = make_optimizer(self.model, cfg)
        self._writer_class = _summary_writer_class() if cfg.tensorboard else None

    def _open_run_dir(self) -> None:
        """The run directory (rank 0), refused or resumed; a new run seeds its dropout streams."""
        cfg, env = self.cfg, self.env
        D.raise_together(env, runs.prepare_run_dir, self.out, to_dict(cfg), stored=stored_config,
                         free=RESUME_FREE)
        ckpt_path = self.out / CKPT_FILE
        resume = D.broadcast_object(ckpt_path.is_file() if env.is_main else None, env)
        self.step, self.elapsed_before, self.rows = 0, 0.0, []
        self.best = {"val_acc": -1.0, "step": -1}
        self.window = _empty_window()
        timing = checkpoint.read_timing(self.out) if resume else {}
        self.eval_times = list(timing.get("eval_elapsed_s", []))
        if resume:
            self._resume(ckpt_path, timing)
        else:
            torch.manual_seed(cfg.seed + 1_000_003 * env.rank)   # per-rank dropout streams

    def _resume(self, ckpt_path: Path, timing: dict[str, Any]) -> None:
        state = checkpoint.load_ckpt(ckpt_path)
        checkpoint.check_resumable(state, ckpt_path, to_dict(self.cfg), self.env.world_size,
                                   stored=stored_config, free=RESUME_FREE)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.elapsed_before = int(state["step"]), timing.get("elapsed_s", 0.0)
        self.rows, self.best = list(state["metrics"]), dict(state["best"])
        self.window = dict(state["window"][self.env.rank])
        checkpoint.set_rng_state(state["rng"][self.env.rank])

    def _make_loader(self) -> None:
        """The (DDP-wrapped) model, TensorBoard, the batches from this step on, the cadences."""
        cfg, env = self.cfg, self.env
        self.ddp = D.wrap(self.model, env)
        self.raw = D.unwrap(self.ddp)
        self.tb = None
        if self._writer_class is not None and env.is_main:
            self.tb = self._writer_class(log_dir=str(self.out / "tb"), purge_step=self.step)
        self.sampler = D.StepBatchSampler(len(self.data["train"]), cfg.batch_size, cfg.seed, env,
                                          start=self.step, stop=cfg.steps)
        self.loader = DataLoader(self.data["train"], batch_sampler=self.sampler, num_workers=cfg.num_workers,
                                 collate_fn=functools.partial(collate, pad_id=self.spec.pad_id),
                                 generator=torch.Generator(), pin_memory=env.device.type == "cuda")
        self.eval_bs = cfg.eval_batch_size or cfg.batch_size
        self.threads = parallel_threads(cfg)   # shards and evaluation batches at once (1 off the CPU: _build)
        self.budget_s = cfg.max_minutes * 60.0 if cfg.max_minutes is not None else math.inf
        self.last_ckpt = time.perf_counter()
        self.ckpt_s = cfg.ckpt_minutes * 60.0 if cfg.ckpt_minutes is not None else math.inf

    def elapsed(self) -> float:
        """Wall-clock seconds of the run over all its sessions."""
        return self.elapsed_before + time.perf_counter() - self.t_session

    # -- the loop -------------------------------------------------------------------------
    def run(self, stop_after: int | None) -> bool:
        """Step until the last step, the time budget, or ``stop_after`` steps of this session;
        returns True when the run is left interrupted (``stop_after``).

        Ctrl-C (SIGINT) or SIGTERM (a scheduler's notice) stops the run at the end of the step
        under way with a checkpoint written, then raises KeyboardInterrupt or SystemExit(143):
        the same command resumes it, losing no step. In one process a second signal acts at
        once; under ``torchrun`` the ranks agree on the step (the request travels in the step's
        one all-reduce of decisions) and later signals wait for it."""
        cfg = self.cfg
        session_steps, interrupted = 0, False
        self.ddp.train()
        env = self.env
        with StopRequests(keep=env.distributed) as stop:
            for batch in self.loader:
                loss, logits, labels = self._optimizer_step(batch)
                session_steps += 1
                self._record(loss, logits, labels)
                # every rank stops at the step where any of them was told to
                out_of_time, stopping = self._evaluate_or_checkpoint(stop.signal is not None)
                if out_of_time:
                    break
                if stopping and self.step < cfg.steps:
                    self.save_checkpoint()
                    if self.bar is not None:
                        self.bar.close()
                    if env.is_main:
                        print(f"{stop.name} at step {self.step} of {cfg.steps}: checkpoint written to "
                              f"{str(self.out)!r}; the same command resumes the run", file=sys.stderr, flush=True)
                    raise stop.exception()
                if stop_after is not None and session_steps >= stop_after and self.step < cfg.steps:
                    if self.step % cfg.eval_every:
                        self.save_checkpoint()   # mid-window: the window sums travel in the checkpoint
                    interrupted = True
                    break
        if self.bar is not None:
            self.bar.close()
        return interrupted

    def _optimizer_step(self, batch: dict[str, torch.Tensor]):
        cfg = self.cfg
        tokens, labels, tokens2 = batch_to(batch, self.env.device)
        with D.no_sync(self.ddp), torch.autocast(self.env.device.type, dtype=torch.bfloat16,
                                                  enabled=cfg.precision == "bf16"):
            loss, logits = forward_backward(self.raw, tokens, labels, method=cfg.method,
                                            k=cfg.tbptt_k if cfg.method == "tbptt" else None,
                                            tokens2=tokens2, overlap=cfg.amrb_overlap, shards=cfg.shards,
                                            shard_threads=self.threads)
        D.average_gradients(self.raw.parameters(), self.env)
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.raw.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss, logits, labels

    def _record(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.numel()
        self.window["loss"] += float(loss) * n
        self.window["correct"] += float((logits.argmax(-1) == labels).sum())
        self.window["count"] += n
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{float(loss):.3f}", best=f"{max(self.best['val_acc'], 0):.3f}",
                                 refresh=False)

    def _evaluate_or_checkpoint(self, stop_requested: bool) -> tuple[bool, bool]:
        """Evaluate (and checkpoint) at the evaluation cadence, the last step or when the time
        budget is spent; else checkpoint when a checkpoint cadence is due. Returns (out of time,
        stop): the step's decisions, taken together by every rank in one all-reduce, the time
        budget and the checkpoint clock rank 0's, a stop where any rank was asked to."""
        cfg, env = self.cfg, self.env
        mine = [float(self.elapsed() > self.budget_s), float(time.perf_counter() - self.last_ckpt > self.ckpt_s)]
        out_of_time, ckpt_due, stop = (v > 0 for v in D.all_reduce_sum(
            [*(mine if env.is_main else [0.0, 0.0]), float(stop_requested)], env))
        ckpt_due = ckpt_due or (cfg.ckpt_every is not None and self.step % cfg.ckpt_every == 0)
        if self.step % cfg.eval_every == 0 or self.step == cfg.steps or out_of_time:
            # gather this window's train loss/acc from all ranks before logging
            w = self.window
            w.update(zip(("loss", "correct", "count"),
                         D.all_reduce_sum([w["loss"], w["correct"], w["count"]], env)))
            self.evaluate()
            self.save_checkpoint()
        elif ckpt_due:
            self.save_checkpoint()   # mid-window: the window sums travel in the checkpoint
        return out_of_time, stop

    # -- evaluation and checkpoints --------------------------------------------------------
    def evaluate(self) -> None:
        """Validation loss and accuracy now: the best weights kept, one metrics row written."""
        env, step, window = self.env, self.step, self.window
        res = evaluate_dataset(self.raw, self.data["val"], batch_size=self.eval_bs, pad_id=self.spec.pad_id,
                               env=env, max_batches=self.cfg.eval_batches, num_workers=self.cfg.num_workers,
                               threads=self.threads)
        if res["acc"] > self.best["val_acc"]:
            self.best.update(val_acc=res["acc"], step=step)
            if env.is_main:
                checkpoint.save(self.raw, None, self.out / BEST_FILE)
        count = max(window["count"], 1.0)
        row = {"step": step, "epoch": round(step / self.sampler.per_epoch, 4),
               "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": window["loss"] / count if window["count"] else float("nan"),
               "train_acc": window["correct"] / count if window["count"] else float("nan"),
               "val_loss": res["loss"], "val_acc": res["acc"], "best_val_acc": self.best["val_acc"]}
        self.rows.append(row)
        self.eval_times.append(round(self.elapsed(), 3))
        self.window = _empty_window()
        if env.is_main:
            write_metrics(self.out / METRICS_FILE, self.rows)
            if self.tb is not None:
                for k in ("lr", "train_loss", "train_acc", "val_loss", "val_acc"):
                    self.tb.add_scalar(k, row[k], step)
                self.tb.flush()

    def save_checkpoint(self) -> None:
        """``model.safetensors``, ``ckpt.pt`` (every rank's RNG and window gathered) and
        ``timing.json``, written by rank 0."""
        env = self.env
        self.last_ckpt = time.perf_counter()
        per_rank = D.gather_objects({"rng": checkpoint.rng_state(), "window": dict(self.window)}, env)
        if not env.is_main:
            return
        checkpoint.save(self.raw, None, self.out / MODEL_FILE)
        checkpoint.save_ckpt(self.out / CKPT_FILE, checkpoint.training_state(
            config=to_dict(self.cfg), world_size=env.world_size, step=self.step, model=self.raw,
            optimizer=self.optimizer, scheduler=self.scheduler, per_rank=per_rank, best=self.best,
            metrics=self.rows))
        runs.atomic_write_json(self.out / TIMING_FILE, {"elapsed_s": round(self.elapsed(), 3),
                                                        "eval_elapsed_s": self.eval_times})

    # -- the end ----------------------------------------------------------------------------
    def leave_interrupted(self) -> None:
        if self.tb is not None:
            self.tb.close()
        D.barrier(self.env)

    def finish(self) -> None:
        """Evaluate the last step if not done, then the best-on-validation weights on val and
        test; results.json, then meta.json (the run is finished)."""
        cfg, env, step = self.cfg, self.env, self.step
        if step == 0 or not self.rows or self.rows[-1]["step"] != step:
            self.evaluate()
            self.save_checkpoint()
        results = self.final_results()
        if env.is_main:
            runs.atomic_write_json(self.out / RESULTS_FILE, results)
            runs.finish_run(self.out, runs.make_meta(
                stage="train", seed=cfg.seed, wall_time_s=self.elapsed(),
                packages=("torch", "safetensors"), world_size=env.world_size,
                device=str(env.device), steps_done=step, results=results,
                eval_steps=[int(r["step"]) for r in self.rows], eval_elapsed_s=self.eval_times))
            (self.out / TIMING_FILE).unlink(missing_ok=True)   # wall times now live in meta.json
            if self.tb is not None:
                self.tb.close()
        D.barrier(env)

    def final_results(self) -> dict[str, Any]:
        """The best-on-validation weights evaluated on val and test, and the majority baseline."""
        cfg, env, data = self.cfg, self.env, self.data
        D.barrier(env)   # best.safetensors is complete before anyone reads it
        model = checkpoint.load_weights(self.out, BEST_FILE, env.device)
        res: dict[str, Any] = {"best_step": int(self.best["step"]), "steps_done": self.step,
                               "checkpoint": BEST_FILE}
        for split in ("val", "test"):
            r = evaluate_dataset(model, data[split], batch_size=self.eval_bs, pad_id=self.spec.pad_id,
                                 env=env, num_workers=cfg.num_workers, threads=self.threads)
            res[f"{split}_acc"], res[f"{split}_loss"], res[f"n_{split}"] = r["acc"], r["loss"], r["n"]
        res["majority"] = majority_baseline(data["train"], {"val": data["val"], "test": data["test"]})
        return res
