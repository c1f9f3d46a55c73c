"""LRA Retrieval: do two ACL Anthology Network papers cite each other? (byte level, pairs).

Official files: ``new_aan_pairs.{train,eval,test}.tsv`` (LRA release, ``tsv_data/``), one
pair a line, five tab-separated columns: label, id1, id2, text1, text2. ``data_dir`` may hold
the files or a ``tsv_data/`` folder with them; ``eval`` is our ``val``. A first line whose
label is not a number is taken as a header and skipped. Each document becomes its first
``max_len`` bytes (4000 in LRA), byte ``b`` -> token ``b + 1``; items carry ``tokens``
(text1) and ``tokens2`` (text2). Lines are indexed once and read on demand.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from astro_rmaat.errors import DataError
from rmaat_model.data.base import find_split_file, PAD_ID, TaskSpec, bytes_to_tokens, check_max_len, check_split

MAX_LEN = 4000     # bytes per document (LRA)
VOCAB_SIZE = 257   # 256 byte values + padding
SPLIT_FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv",
               "test": "new_aan_pairs.test.tsv"}
N_COLUMNS = 5


def _parse_label(field: bytes) -> int | None:
    try:
        value = float(field)
    except ValueError:
        return None
    if value not in (0.0, 1.0):
        return -1
    return int(value)


class AanPairs(torch.utils.data.Dataset):
    """Pairs of one TSV file as ``{"tokens": (L1,), "tokens2": (L2,), "label": 0|1}``."""

    def __init__(self, path: str | Path, max_len: int = MAX_LEN):
        self.path = Path(path)
        self.max_len = max_len
        self.offsets: list[int] = []
        self.labels: list[int] = []
        self._fh = None
        self._pid = None
        with open(self.path, "rb") as fh:
            offset = 0
            for lineno, line in enumerate(fh, start=1):
                start, offset = offset, offset + len(line)
                if not line.strip():
                    continue
                fields = line.rstrip(b"\r\n").split(b"\t")
                label = _parse_label(fields[0])
                if label is None and lineno == 1:
                    continue  # header
                if len(fields) != N_COLUMNS:
                    raise DataError(f"{str(self.path)!r} line {lineno}: expected {N_COLUMNS} "
                                    "tab-separated columns (label, id1, id2, text1, text2), "
                                    f"got {len(fields)}")
                if label is None or label < 0:
                    raise DataError(f"{str(self.path)!r} line {lineno}: label = "
                                    f"{fields[0][:20]!r}: expected 0 or 1")
                self.offsets.append(start)
                self.labels.append(label)
        if not self.offsets:
            raise DataError(f"{str(self.path)!r} holds no pairs")

    def __len__(self) -> int:
        return len(self.offsets)

    def _file(self):
        if self._fh is None or self._pid != os.getpid():  # one handle per DataLoader worker
            self._fh, self._pid = open(self.path, "rb"), os.getpid()
        return self._fh

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fh": None, "_pid": None}

    def __getitem__(self, i: int) -> dict:
        fh = self._file()
        fh.seek(self.offsets[i])
        fields = fh.readline().rstrip(b"\r\n").split(b"\t")
        return {"tokens": bytes_to_tokens(fields[3], self.max_len),
                "tokens2": bytes_to_tokens(fields[4], self.max_len),
                "label": self.labels[i]}


def find_file(data_dir: str | Path, split: str) -> Path:
    data_dir = Path(data_dir)
    name = SPLIT_FILES[split]
    found = find_split_file(data_dir, name, "tsv_data")
    if found is not None:
        return found
    raise DataError(f"Retrieval {split} split not found: expected {str(data_dir / name)!r}. "
                    "Take it from the LRA release (lra_release.gz, folder tsv_data/, "
                    "https://github.com/google-research/long-range-arena) and put the "
                    f"new_aan_pairs.{{train,eval,test}}.tsv files into {str(data_dir)!r}")


def load_split(data_dir: str | Path, split: str,
               max_len: int | None = None) -> tuple[TaskSpec, AanPairs]:
    check_split(split)
    max_len = check_max_len(max_len, MAX_LEN)
    spec = TaskSpec(name="retrieval", vocab_size=VOCAB_SIZE, n_classes=2, max_len=max_len,
                    pad_id=PAD_ID, pair=True)
    return spec, AanPairs(find_file(data_dir, split), max_len)
