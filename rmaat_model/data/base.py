"""The shared face of the Long Range Arena tasks: a task spec, a loader registry, a collate.

Every task module (``listops``, ``text``, ``retrieval``, ``image``, ``pathfinder``, and the
synthetic ``recall`` task of the training code) exposes
``load_split(data_dir, split, max_len) -> (TaskSpec, Dataset)``. Dataset items are dicts
``{"tokens": LongTensor (L,), "label": int}`` (plus ``"tokens2"`` for the two-document
Retrieval task), variable length and unpadded. Token id 0 is reserved for padding in every
task, so byte and pixel tasks shift their values by one (byte ``b`` -> token ``b + 1``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from astro_rmaat.errors import ConfigError

PAD_ID = 0  # reserved padding id, shared by every task
SPLITS = ("train", "val", "test")
Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class TaskSpec:
    name: str         # task name as in TASKS ("listops", "text", ...)
    vocab_size: int   # number of token ids, padding (0) included
    n_classes: int    # number of labels; labels are 0 .. n_classes - 1
    max_len: int      # longest sequence (per document for pair tasks), tokens
    pad_id: int       # padding id (always PAD_ID = 0)
    pair: bool        # True when items carry a second document in "tokens2"


#: task name -> module exposing load_split(data_dir, split, max_len); imported lazily
TASKS: dict[str, str] = {
    "listops": "rmaat_model.data.listops",
    "text": "rmaat_model.data.text",
    "retrieval": "rmaat_model.data.retrieval",
    "image": "rmaat_model.data.image",
    "pathfinder": "rmaat_model.data.pathfinder",
    "recall": "rmaat_model.data.synthetic",
    "assoc": "rmaat_model.data.assoc",
}
#: tasks generated in memory from a seed: no data_dir
SYNTHETIC_TASKS = ("recall", "assoc")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split = {split!r}: expected one of {', '.join(SPLITS)}")


def find_split_file(data_dir: str | Path, name: str, release_folder: str) -> Path | None:
    """``DATA/name``, else ``DATA/<release_folder>/name`` (the LRA release's layout); None if
    neither is a file (the task's loader says where to get it)."""
    data_dir = Path(data_dir)
    for candidate in (data_dir / name, data_dir / release_folder / name):
        if candidate.is_file():
            return candidate
    return None


def check_max_len(max_len: int | None, default: int) -> int:
    """``max_len`` or the task's default; a positive integer."""
    if max_len is None:
        return default
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len <= 0:
        raise ConfigError(f"max_len = {max_len!r}: expected a positive integer (tokens)")
    return max_len


def check_fits_memory(task: str, n_examples: int, max_len: int) -> None:
    """Refuse a synthetic task whose ``n_examples`` sequences of ``max_len`` int64 tokens (all
    its splits: a run holds them together) exceed the memory this process may use
    (``resources.memory_limit_bytes``), before they are generated. A lower bound: generation and
    training need more."""
    from astro_rmaat.resources import memory_limit_bytes

    have = memory_limit_bytes()
    need = n_examples * max_len * 8
    if have is not None and need > have:
        raise ConfigError(f"max_len = {max_len}: the {task} task's {n_examples:,} sequences of {max_len:,} tokens "
                          f"take {need / 2**30:,.1f} GiB as int64, more than the {have / 2**30:.1f} GiB of "
                          "memory; expected a shorter max_len")


def load_split(task: str, data_dir: str | Path, split: Split,
               max_len: int | None = None, **options) -> tuple[TaskSpec, torch.utils.data.Dataset]:
    """The spec and dataset of one split of ``task``, read from ``data_dir``.

    ``options`` go to the task's own loader (``assoc``: ``segment_len``, ``pairs``).

    Raises ConfigError for an unknown task or split and DataError (naming the file to
    obtain, or the ``rmaat generate`` command that writes it) when ``data_dir`` lacks it.
    """
    if task not in TASKS:
        raise ConfigError(f"task = {task!r}: unknown task; expected one of {', '.join(TASKS)}")
    check_split(split)
    if data_dir is None and task not in SYNTHETIC_TASKS:
        raise ConfigError(f"task = {task!r} reads its files from data_dir, which is not set; "
                          f"pass --data DIR (see `rmaat train --help`; ListOps and Pathfinder "
                          f"are written by `rmaat generate`)")
    module = importlib.import_module(TASKS[task])
    return module.load_split(data_dir, split, max_len, **options)


def collate(batch: list[dict], pad_id: int = PAD_ID) -> dict[str, torch.Tensor]:
    """Right-pad a list of items into ``{"tokens": (B, Lmax), "label": (B,)}`` (+ "tokens2")."""
    if not batch:
        raise ValueError("collate: empty batch")
    out = {"tokens": _pad([item["tokens"] for item in batch], pad_id),
           "label": torch.tensor([int(item["label"]) for item in batch], dtype=torch.long)}
    if "tokens2" in batch[0]:
        out["tokens2"] = _pad([item["tokens2"] for item in batch], pad_id)
    return out


def batch_to(batch: dict[str, torch.Tensor], device: torch.device):
    """A ``collate`` batch on ``device``: ``(tokens, labels, tokens2 or None)``."""
    tokens = batch["tokens"].to(device, non_blocking=True)
    labels = batch["label"].to(device, non_blocking=True)
    tokens2 = batch["tokens2"].to(device, non_blocking=True) if "tokens2" in batch else None
    return tokens, labels, tokens2


def _pad(seqs: list[torch.Tensor], pad_id: int) -> torch.Tensor:
    longest = max(len(s) for s in seqs)
    out = torch.full((len(seqs), longest), pad_id, dtype=torch.long)  # (B, Lmax)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def bytes_to_tokens(data: bytes, max_len: int) -> torch.Tensor:
    """Byte-level tokens (LRA Text/Retrieval): the first ``max_len`` bytes, each + 1."""
    arr = torch.frombuffer(bytearray(data[:max_len]), dtype=torch.uint8) if data else \
        torch.empty(0, dtype=torch.uint8)
    return arr.to(torch.long) + 1
