"""ListOps (Nangia & Bowman 2018, LRA settings): the official ``basic_{train,val,test}.tsv``
files as a torch Dataset, with the official tokenisation.

The files come from the LRA release (``listops-1000/``) or from ``rmaat generate listops``
(rmaat_model.data.generate.listops, which also holds the tokeniser and the evaluator).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from astro_rmaat.errors import DataError
from rmaat_model.data.base import find_split_file, PAD_ID, TaskSpec, check_max_len, check_split
from rmaat_model.data.generate.listops import END, HEADER, OPERATORS, SPLIT_FILES, tokenize

MAX_LEN = 2000      # LRA pads ListOps to 2000 tokens
N_CLASSES = 10

#: token -> id; 0 is padding. Official tokenisation: drop parentheses, split on spaces.
VOCAB: dict[str, int] = {tok: i for i, tok in
                         enumerate(["<pad>", *map(str, range(10)), *OPERATORS, END])}
ID_TO_TOKEN = {i: tok for tok, i in VOCAB.items()}
assert VOCAB["<pad>"] == PAD_ID


def encode(source: str) -> list[int]:
    """Token ids of ``source`` (see VOCAB); an unknown token raises DataError."""
    try:
        return [VOCAB[tok] for tok in tokenize(source)]
    except KeyError as exc:
        raise DataError(f"unknown ListOps token {exc.args[0]!r}; expected 0-9, "
                        f"{', '.join(OPERATORS)} or ']'") from None


# --------------------------------------------------------------------------- dataset
def iter_tsv(path: str | Path) -> Iterator[tuple[int, str, int]]:
    """``(line number, source, label)`` of an official-format TSV (header ``Source\\tTarget``)."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise DataError(f"{str(path)!r}: expected the header 'Source<TAB>Target' "
                            f"(official ListOps TSV), got {header!r}")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2:
                raise DataError(f"{str(path)!r} line {lineno}: expected 2 tab-separated "
                                f"columns (Source, Target), got {len(row)}")
            try:
                label = int(float(row[1]))
            except ValueError:
                raise DataError(f"{str(path)!r} line {lineno}: Target = {row[1]!r}: expected "
                                "an integer 0-9") from None
            if not 0 <= label < N_CLASSES:
                raise DataError(f"{str(path)!r} line {lineno}: Target = {label}: expected 0-9")
            yield lineno, row[0], label


class ListOpsDataset(torch.utils.data.Dataset):
    """Official-format TSV rows as ``{"tokens": LongTensor (L,), "label": int}``.

    All rows are tokenised when the file is read and kept as one flat uint8 array (about
    0.1 GB for the 96K training set); sequences longer than ``max_len`` are cut (LRA too).
    """

    def __init__(self, path: str | Path, max_len: int = MAX_LEN):
        self.path = Path(path)
        self.max_len = max_len
        self.labels: list[int] = []
        parts = []
        for lineno, source, label in iter_tsv(self.path):
            try:
                parts.append(np.array(encode(source), dtype=np.uint8))
            except DataError as exc:
                raise DataError(f"{str(self.path)!r} line {lineno}: {exc}") from None
            self.labels.append(label)
        lengths = np.array([len(p) for p in parts], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.labels)

    def text(self, i: int) -> str:
        """Row ``i`` as bare tokens (``[MAX 3 ]``), e.g. for ``evaluate``."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return " ".join(ID_TO_TOKEN[t] for t in self.ids[a:b])

    def __getitem__(self, i: int) -> dict:
        a, b = self.offsets[i], self.offsets[i + 1]
        b = min(b, a + self.max_len)
        return {"tokens": torch.from_numpy(self.ids[a:b].astype(np.int64)),
                "label": self.labels[i]}


def find_file(data_dir: str | Path, split: str) -> Path:
    data_dir = Path(data_dir)
    name = SPLIT_FILES[split]
    found = find_split_file(data_dir, name, "listops-1000")
    if found is not None:
        return found
    raise DataError(f"ListOps {split} split not found: expected {str(data_dir / name)!r}. "
                    f"Create it with 'rmaat generate listops --out {data_dir}' (96K/2K/2K, "
                    "official settings) or copy the LRA release's listops-1000/ files there")


def load_split(data_dir: str | Path, split: str,
               max_len: int | None = None) -> tuple[TaskSpec, ListOpsDataset]:
    check_split(split)
    max_len = check_max_len(max_len, MAX_LEN)
    spec = TaskSpec(name="listops", vocab_size=len(VOCAB), n_classes=N_CLASSES,
                    max_len=max_len, pad_id=PAD_ID, pair=False)
    return spec, ListOpsDataset(find_file(data_dir, split), max_len)
