"""LRA Image: CIFAR-10 in grey levels, one token per pixel (1024 tokens, 10 classes).

Official files: the python version of CIFAR-10, ``cifar-10-batches-py/`` with the pickled
batches ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (dicts with ``b"data"``,
an (N, 3072) uint8 array of R, G and B planes of 32x32, and ``b"labels"``). ``data_dir``
may hold that folder or be it. These pickles are trusted input (they are unpickled).

Splits as LRA: train = the first 90 % of the 50K training images (45K), val = the last
10 % (5K), test = the 10K test images. Grey level = round(0.2989 R + 0.5870 G + 0.1140 B)
(the ITU-R 601 weights of ``tf.image.rgb_to_grayscale``), 0..255; token = grey + 1 (0 is
padding), vocabulary 257, row-major pixel order.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from astro_rmaat.errors import ConfigError, DataError
from rmaat_model.data.base import PAD_ID, TaskSpec, check_split

SIDE = 32
MAX_LEN = SIDE * SIDE
VOCAB_SIZE = 257
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
TRAIN_FRACTION = 0.9   # LRA: train[:90%] / train[90%:]
GREY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140])


def find_root(data_dir: str | Path) -> Path:
    data_dir = Path(data_dir)
    for root in (data_dir / "cifar-10-batches-py", data_dir):
        if (root / TEST_FILE).is_file() or (root / TRAIN_FILES[0]).is_file():
            return root
    raise DataError(f"CIFAR-10 not found under {str(data_dir)!r}: expected "
                    f"{str(data_dir / 'cifar-10-batches-py' / 'data_batch_1')!r} .. data_batch_5 "
                    "and test_batch. Download cifar-10-python.tar.gz from "
                    f"https://www.cs.toronto.edu/~kriz/cifar.html and unpack it into {str(data_dir)!r}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb (N, 3072) uint8, labels (N,))`` of one pickled batch, checked."""
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch {str(path)!r} is missing: expected the official "
                        "cifar-10-batches-py/ files data_batch_1..5 and test_batch")
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{str(path)!r} is not a CIFAR-10 python batch (a pickled dict with "
                        f"b'data' and b'labels'): {exc}") from None
    if data.ndim != 2 or data.shape[1] != 3 * MAX_LEN or len(labels) != len(data):
        raise DataError(f"{str(path)!r}: expected data of shape (N, 3072) and N labels, got "
                        f"{data.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{str(path)!r}: labels outside 0-9")
    return data, labels


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """(N, 3072) RGB planes -> (N, 1024) grey levels 0..255 (uint8)."""
    planes = rgb.reshape(-1, 3, MAX_LEN).astype(np.float64)  # (N, 3, 1024)
    grey = np.einsum("c,ncp->np", GREY_WEIGHTS, planes)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


class GreyImages(torch.utils.data.Dataset):
    """``{"tokens": (1024,) grey + 1, "label": 0..9}`` from arrays already in memory."""

    def __init__(self, grey: np.ndarray, labels: np.ndarray):
        self.tokens = torch.from_numpy(grey.astype(np.int64) + 1)  # (N, 1024)
        self.labels = labels.astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"tokens": self.tokens[i], "label": int(self.labels[i])}


def load_split(data_dir: str | Path, split: str,
               max_len: int | None = None) -> tuple[TaskSpec, GreyImages]:
    check_split(split)
    if max_len not in (None, MAX_LEN):
        raise ConfigError(f"max_len = {max_len!r}: CIFAR-10 images are {MAX_LEN} pixel tokens")
    root = find_root(data_dir)
    if split == "test":
        rgb, labels = read_batch(root / TEST_FILE)
    else:
        parts = [read_batch(root / name) for name in TRAIN_FILES]
        rgb = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        n_train = int(round(TRAIN_FRACTION * len(labels)))
        sl = slice(0, n_train) if split == "train" else slice(n_train, None)
        rgb, labels = rgb[sl], labels[sl]
    spec = TaskSpec(name="image", vocab_size=VOCAB_SIZE, n_classes=10, max_len=MAX_LEN,
                    pad_id=PAD_ID, pair=False)
    return spec, GreyImages(to_grey(rgb), labels)
