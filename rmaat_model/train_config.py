"""The configuration of a training run, and what it resolves to before training starts.

``TrainConfig`` (with ``OptimConfig`` and the architecture's ``ModelConfig``) is all a run
depends on: it is written first as the run's ``config.json`` and is the key to resuming
(rmaat_model.train). ``load_data`` reads the task's splits, ``model_config_for`` fills the
task's fields (vocabulary, classes, length, padding, head) into the ModelConfig.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from astro_rmaat.config import from_dict, require_positive, require_seed, to_dict
from astro_rmaat.errors import ConfigError, DataError
from rmaat_model import shards as batch_shards
from rmaat_model.amrb import Method
from rmaat_model.data.base import TASKS, TaskSpec, load_split
from rmaat_model.model_config import ModelConfig, with_legacy_layout

#: ModelConfig fields that come from the task, not from the user
TASK_FIELDS = ("vocab_size", "n_classes", "max_len", "pad_id", "head")
#: the generated tasks, and the segments their examples span when max_len is not set
SYNTHETIC_TASKS = ("recall", "assoc")
SYNTHETIC_SEGMENTS = 4
#: their max_len where a stored config left it null, before it followed segment_len
LEGACY_SYNTHETIC_MAX_LEN = 64


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
                                      # (recall, assoc: SYNTHETIC_SEGMENTS segments of model.segment_len)
    truncate: bool = False            # allow a max_len shorter than the data's sequences (cut)
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture; the task
                                      # fields (vocab_size, n_classes, max_len, pad_id, head)
                                      # are filled from the data, whatever is set here
    method: Method = "amrb"           # gradient through the segments (rmaat_model.amrb)
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
                                      # ListOps step 15x slower than 1, bench/train_step_speed.py). With
                                      # shards > 1 also how many shards (and evaluation batches) run at
                                      # once (None: as many as shards; parallel_threads)
    shards: int = 1                   # each batch's rows in this many shards, each on its own CPU thread
                                      # with its own dropout generator (rmaat_model.shards); the numbers
                                      # follow it, not threads. 2 on 2 cores: the demo's ListOps step
                                      # 1.2x as fast as with 2 intra-op threads (docs/training.md)
    amrb_overlap: bool = False        # AMRB: each replay on a second thread while this one backpropagates
                                      # the segment after it; needs threads >= 2 (split between the two),
                                      # CPU and a memory arch; keeps two segments' graphs (rmaat_model.amrb)
    compile: bool = False             # run the block stack through torch.compile (RMAAT.compile_blocks):
                                      # a one-off compile of 20-40 s, then fewer, fused operations
                                      # (bench/throughput.py --compile measures it); same numbers to round-off
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: each training step under torch.autocast(bfloat16),
                                      # weights, optimiser and evaluation in float32 (for a GPU; on
                                      # this project's CPU a bf16 step ran 3x slower: bench/gpu_check.py
                                      # --device cpu --quick)
    tensorboard: bool = False         # also write TensorBoard events to tb/ (needs tensorboard)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task = {self.task!r}: unknown task; expected one of "
                              f"{', '.join(TASKS)}")
        if self.max_len is None and self.task in SYNTHETIC_TASKS and isinstance(self.model, ModelConfig):
            # resolved here, so config.json records the length the data is made at
            object.__setattr__(self, "max_len", SYNTHETIC_SEGMENTS * self.model.segment_len)
        self._check_counts()
        self._check_cadences()
        self._check_runtime()
        self._check_task_layout()

    def _check_counts(self) -> None:
        for name in ("steps", "eval_every", "batch_size", "tbptt_k"):
            value = getattr(self, name)
            if not _is_positive_int(value):
                raise ConfigError(f"{name} = {value!r}: expected a positive integer")
        for name in ("max_len", "eval_batches", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and not _is_positive_int(value):
                raise ConfigError(f"{name} = {value!r}: expected a positive integer or null")

    def _check_cadences(self) -> None:
        if self.max_minutes is not None:
            require_positive("max_minutes", self.max_minutes, "min")
        if self.ckpt_minutes is not None:
            require_positive("ckpt_minutes", self.ckpt_minutes, "min")
        if self.ckpt_every is not None and not _is_positive_int(self.ckpt_every):
            raise ConfigError(f"ckpt_every = {self.ckpt_every!r}: expected a positive integer or null")

    def _check_runtime(self) -> None:
        require_seed("seed", self.seed)
        if self.num_workers < 0:
            raise ConfigError(f"num_workers = {self.num_workers!r}: expected >= 0")
        if self.threads is not None and not _is_positive_int(self.threads):
            raise ConfigError(f"threads = {self.threads!r}: expected a positive integer or null (1)")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile = {self.compile!r}: expected true or false")
        if not isinstance(self.amrb_overlap, bool):
            raise ConfigError(f"amrb_overlap = {self.amrb_overlap!r}: expected true or false")
        if self.amrb_overlap and self.method != "amrb":
            raise ConfigError(f"amrb_overlap = true overlaps AMRB's replays; method = {self.method!r} has none "
                              "(set method = 'amrb' or amrb_overlap = false)")
        if self.amrb_overlap and isinstance(self.model, ModelConfig) and not self.model.has_memory:
            raise ConfigError(f"amrb_overlap = true overlaps AMRB's replays; model.arch = {self.model.arch!r} "
                              "runs each sequence in one pass and has none (set amrb_overlap = false)")
        if self.amrb_overlap and self.precision == "bf16":
            raise ConfigError("amrb_overlap = true runs replays on a thread that torch.autocast does not "
                              "reach; precision = 'bf16' needs it (set one of them back)")
        # the count, and the eager block stack, as forward_backward checks them (the device: Trainer._build)
        batch_shards.check(self.shards, device="cpu", compiled=self.compile)
        if self.shards > self.batch_size:
            raise ConfigError(f"shards = {self.shards} is more than batch_size = {self.batch_size} "
                              "(each shard needs at least one sequence)")
        if self.shards > 1 and self.amrb_overlap:
            raise ConfigError(f"shards = {self.shards} and amrb_overlap = true both take the second thread; "
                              "set one of them back")
        if self.amrb_overlap and (self.threads or 1) < 2:
            raise ConfigError(f"amrb_overlap = true needs threads >= 2 (the replays' thread and the backward's "
                              f"share them); threads = {self.threads!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision = {self.precision!r}: expected 'fp32' or 'bf16'")

    def _check_task_layout(self) -> None:
        """The synthetic tasks' layouts, checked before any file is written."""
        if self.task == "assoc":   # the layout must hold the pairs
            from rmaat_model.data import assoc
            assoc.check_layout(self.max_len, self.model.segment_len, self.assoc_pairs)
        if self.recall_min_segments is not None:
            if self.task != "recall":
                raise ConfigError(f"recall_min_segments = {self.recall_min_segments!r} applies to task "
                                  f"'recall' only (task is {self.task!r}); leave it null")
            from rmaat_model.data.synthetic import check_varying
            check_varying(self.max_len, self.model.segment_len, self.recall_min_segments)


def parallel_threads(cfg: TrainConfig) -> int:
    """How many batch shards run at once, and evaluation batches with them: ``shards``, capped
    by ``threads`` where set (1 without shards)."""
    return cfg.shards if cfg.threads is None else min(cfg.shards, cfg.threads)


#: TrainConfig fields an interrupted run may be resumed with changed: they change no number the
#: run writes. The DataLoader's workers only read the items the sampler (in the main process)
#: picks, and every dataset's item is a function of its index alone. A checkpoint carries the
#: whole state, the evaluation window's sums included, so when one is written changes nothing
#: (a kill at any moment resumes to the same bytes, tests/test_faults.py): a long run resumed
#: under a scheduler's tighter limit may checkpoint more often.
RESUME_FREE: tuple[str, ...] = ("num_workers", "ckpt_every", "ckpt_minutes")


def stored_config(data: dict[str, Any]) -> dict[str, Any]:
    """A run's stored config (config.json, a checkpoint's) as this version writes it: a field
    added since it was written takes the value the run was made with -- the field's default
    (the behaviour before it existed), except the model's block layout and RF reading, which
    read as pre-LN and literal (``model_config.LEGACY_DEFAULTS``), a learned retention table's
    range, which reads as "free" (``model_config.with_legacy_layout``), and a synthetic task's null
    max_len, which meant 64 tokens. So an interrupted run of an
    earlier version resumes under the same command, and one whose model differs is refused
    with the field named. ConfigError when it no longer reads at all."""
    if not isinstance(data, dict):
        raise ConfigError(f"stored train config: expected a table (JSON object), got {data!r}")
    upgraded = dict(data)
    upgraded["model"] = with_legacy_layout(data.get("model", {}))
    if upgraded.get("task") in SYNTHETIC_TASKS and upgraded.get("max_len") is None:
        upgraded["max_len"] = LEGACY_SYNTHETIC_MAX_LEN   # the fixed default before it followed segment_len
    return to_dict(from_dict(TrainConfig, upgraded))


def _is_positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


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

