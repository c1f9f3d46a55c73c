"""LRA Text: IMDB movie reviews as bytes (binary sentiment), read from the official files.

Layout (Maas et al. 2011 release, unpacked): ``aclImdb/{train,test}/{pos,neg}/*.txt``.
``data_dir`` may be the folder holding ``aclImdb/`` or ``aclImdb/`` itself. Labels: pos = 1,
neg = 0. As in LRA, the test reviews double as the validation split. Each review becomes its
first ``max_len`` bytes (4000 as in the RMAAT paper's LRA setting; the LRA repository's config
uses 1000), byte ``b`` -> token ``b + 1`` (0 is padding), vocabulary 257.
"""

from __future__ import annotations

from pathlib import Path

import torch

from astro_rmaat.errors import DataError
from rmaat_model.data.base import PAD_ID, TaskSpec, bytes_to_tokens, check_max_len, check_split

MAX_LEN = 4000     # bytes per review (paper setting); pass 1000 for the LRA repo config
VOCAB_SIZE = 257   # 256 byte values + padding
LABELS = {"neg": 0, "pos": 1}
SPLIT_DIRS = {"train": "train", "val": "test", "test": "test"}  # LRA: test doubles as val


def find_root(data_dir: str | Path) -> Path:
    data_dir = Path(data_dir)
    for root in (data_dir / "aclImdb", data_dir):
        if (root / "train" / "pos").is_dir() or (root / "test" / "pos").is_dir():
            return root
    raise DataError(f"IMDB reviews not found under {str(data_dir)!r}: expected "
                    f"{str(data_dir / 'aclImdb' / 'train' / 'pos')!r} (and neg, and test/). "
                    "Download aclImdb_v1.tar.gz from https://ai.stanford.edu/~amaas/data/sentiment/ "
                    f"and unpack it into {str(data_dir)!r}")


class ImdbBytes(torch.utils.data.Dataset):
    """Reviews of one ``aclImdb`` sub-folder as ``{"tokens": (L,) bytes + 1, "label": 0|1}``."""

    def __init__(self, folder: str | Path, max_len: int = MAX_LEN):
        folder = Path(folder)
        self.max_len = max_len
        self.files: list[Path] = []
        self.labels: list[int] = []
        for name, label in LABELS.items():
            sub = folder / name
            if not sub.is_dir():
                raise DataError(f"IMDB folder {str(sub)!r} is missing: expected the official "
                                f"layout aclImdb/{{train,test}}/{{pos,neg}}/*.txt")
            files = sorted(sub.glob("*.txt"))
            if not files:
                raise DataError(f"IMDB folder {str(sub)!r} holds no *.txt reviews")
            self.files += files
            self.labels += [label] * len(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        data = self.files[i].read_bytes()
        return {"tokens": bytes_to_tokens(data, self.max_len), "label": self.labels[i]}


def load_split(data_dir: str | Path, split: str,
               max_len: int | None = None) -> tuple[TaskSpec, ImdbBytes]:
    check_split(split)
    max_len = check_max_len(max_len, MAX_LEN)
    root = find_root(data_dir)
    spec = TaskSpec(name="text", vocab_size=VOCAB_SIZE, n_classes=2, max_len=max_len,
                    pad_id=PAD_ID, pair=False)
    return spec, ImdbBytes(root / SPLIT_DIRS[split], max_len)
