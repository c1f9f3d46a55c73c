"""``recall``: a seeded synthetic long-range task that only a model with memory can solve.

Each example is a sequence of ``max_len`` tokens. One *answer* token (one of ``N_CLASSES``
values) sits at a random position among the first ``ANSWER_WINDOW`` positions; every other
position except the last holds a *distractor* token drawn from a separate alphabet; the
last position holds the *query* token. The label is the answer's value.

With a segment length ``S`` (``ANSWER_WINDOW <= S``) and ``max_len = T * S``, the answer
always lies in the first segment and the question in the last one, so a segment-recurrent
model must carry the answer through ``T - 1`` segment boundaries in its memory, while a
model that sees only the last segment (AT with ``at_scope="segment"``, no memory) can do no
better than chance (``1 / N_CLASSES``). The training tests use ``T >= 4``.

Layout of the vocabulary (``VOCAB_SIZE`` tokens)::

    0                      padding (never produced; the task has fixed length)
    1                      query
    2 .. 2+N_CLASSES-1     answers (label = token - 2)
    2+N_CLASSES .. end     distractors

With ``min_segments`` (and ``segment_len``) the lengths vary: each example has ``T_b``
segments, ``T_b`` uniform in ``min_segments .. max_len / segment_len``, padded to ``max_len``
with the padding id, the query at its last real position. Its *age* ``T_b - 1`` (segments
between the answer and the query) is kept in ``dataset.ages``: accuracy by age is a
forgetting curve.

Every split is generated from its own fixed seed, deterministically: ``data_dir`` is
ignored (there is nothing to download), so the same call gives the same tensors anywhere.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from astro_rmaat.errors import ConfigError
from rmaat_model.data.base import PAD_ID, TaskSpec, check_fits_memory, check_max_len, check_split

NAME = "recall"
QUERY_ID = 1
N_CLASSES = 8                    # answer alphabet; chance accuracy = 1/8
N_DISTRACTORS = 16               # distractor alphabet
ANSWER_OFFSET = 2
DISTRACTOR_OFFSET = ANSWER_OFFSET + N_CLASSES
VOCAB_SIZE = DISTRACTOR_OFFSET + N_DISTRACTORS
ANSWER_WINDOW = 8                # the answer sits in positions [0, ANSWER_WINDOW)
DEFAULT_MAX_LEN = 64             # 4 segments of 16 tokens
SPLIT_SIZES = {"train": 8192, "val": 512, "test": 512}   # examples per split
SPLIT_SEEDS = {"train": 11, "val": 12, "test": 13}       # one fixed seed per split


class RecallDataset(Dataset):
    """The generated split, in memory; items are ``{"tokens": (L,) int64, "label": int}``."""

    def __init__(self, tokens: torch.Tensor, labels: torch.Tensor) -> None:
        self.tokens = tokens      # (N, L) int64
        self.labels = labels      # (N,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> dict:
        return {"tokens": self.tokens[i], "label": int(self.labels[i])}


def generate(n: int, max_len: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples of length ``max_len`` from ``seed``: (tokens (n, L), labels (n,))."""
    tokens, labels, _ = generate_varying(n, max_len, seed)
    return tokens, labels


def check_varying(max_len: int, segment_len: int | None, min_segments: int) -> int:
    """T = max_len / segment_len after checking a varying-length layout."""
    if segment_len is None or segment_len < ANSWER_WINDOW + 1 or max_len % segment_len:
        raise ConfigError(f"recall with varying lengths: segment_len = {segment_len!r} must divide max_len = "
                          f"{max_len} and hold the answer window ({ANSWER_WINDOW} tokens) and the query")
    T = max_len // segment_len
    if not (isinstance(min_segments, int) and 2 <= min_segments <= T):
        raise ConfigError(f"recall min_segments = {min_segments!r}: expected an integer in 2 .. {T} "
                          f"(= max_len / segment_len)")
    return T


def generate_varying(n: int, max_len: int, seed: int, segment_len: int | None = None,
                     min_segments: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens (n, L), labels (n,), ages (n,)); lengths vary when ``min_segments`` is given."""
    if max_len < ANSWER_WINDOW + 1:
        raise ConfigError(f"recall max_len = {max_len}: expected at least {ANSWER_WINDOW + 1} "
                          "(answer window plus the query)")
    rng = np.random.default_rng(seed)
    tokens = rng.integers(DISTRACTOR_OFFSET, VOCAB_SIZE, size=(n, max_len), dtype=np.int64)
    labels = rng.integers(0, N_CLASSES, size=n, dtype=np.int64)
    where = rng.integers(0, ANSWER_WINDOW, size=n)
    tokens[np.arange(n), where] = ANSWER_OFFSET + labels
    if min_segments is None:
        tokens[:, -1] = QUERY_ID
        T = max_len // segment_len if segment_len else 1
        return tokens, labels, np.full(n, max(T - 1, 0), dtype=np.int64)
    T = check_varying(max_len, segment_len, min_segments)
    T_b = rng.integers(min_segments, T + 1, size=n)
    length = T_b * segment_len
    tokens[np.arange(max_len)[None, :] >= length[:, None]] = PAD_ID
    tokens[np.arange(n), length - 1] = QUERY_ID
    return tokens, labels, (T_b - 1).astype(np.int64)


def task_spec(max_len: int = DEFAULT_MAX_LEN) -> TaskSpec:
    return TaskSpec(name=NAME, vocab_size=VOCAB_SIZE, n_classes=N_CLASSES, max_len=max_len,
                    pad_id=PAD_ID, pair=False)


def load_split(data_dir, split: str, max_len: int | None = None, *, segment_len: int | None = None,
               min_segments: int | None = None) -> tuple[TaskSpec, RecallDataset]:
    """The ``split`` ('train', 'val' or 'test') of length ``max_len`` (default 64); lengths
    vary from ``min_segments`` to ``max_len / segment_len`` segments when it is given.

    ``data_dir`` is accepted for the common loader signature and ignored.
    """
    check_split(split)
    L = check_max_len(max_len, DEFAULT_MAX_LEN)
    check_fits_memory(NAME, sum(SPLIT_SIZES.values()), L)
    tokens, labels, ages = generate_varying(SPLIT_SIZES[split], L, SPLIT_SEEDS[split], segment_len, min_segments)
    dataset = RecallDataset(torch.from_numpy(tokens), torch.from_numpy(labels))
    dataset.ages = torch.from_numpy(ages)      # (n,) segments between the answer and the query
    return task_spec(L), dataset
