"""Pathfinder (Linsley et al. 2018; Kim et al. 2020) as in LRA: the loader of the official files.

Layout (official; written by ``rmaat generate pathfinder``, rmaat_model.data.generate.pathfinder,
whose doc describes the images): ``pathfinder{R}/curv_contour_length_14/imgs/<batch>/sample_<i>.png``
and ``metadata/<batch>.npy`` -- despite the suffix a *text* file, one line per image, space
separated. The loader uses columns 0, 1 (path) and 3 (label).

Loader: all metadata rows in batch order; train = first 80 %, val = next 10 %, test = last
10 % (LRA's split of the "hard" set). Pixel tokens are grey + 1 (0 is padding), vocabulary
257, row-major.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from astro_rmaat.errors import ConfigError, DataError
from rmaat_model.data.base import PAD_ID, TaskSpec, check_split
from rmaat_model.data.generate.pathfinder import SETTINGS, SUBDIR, dataset_dir

VOCAB_SIZE = 257
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


def read_metadata(root: Path) -> list[tuple[Path, int]]:
    """``(image path, label)`` of every metadata row, batches in numeric order."""
    meta_dir = root / "metadata"
    files = [f for f in meta_dir.glob("*.npy") if re.fullmatch(r"\d+", f.stem)]
    if not files:
        raise DataError(f"no Pathfinder metadata in {str(meta_dir)!r}: expected metadata/<batch>.npy "
                        "text files")
    rows = []
    for f in sorted(files, key=lambda f: int(f.stem)):
        for lineno, line in enumerate(f.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            cols = line.split(" ")
            if len(cols) < 4 or cols[3] not in ("0", "1"):
                raise DataError(f"{str(f)!r} line {lineno}: expected 'imgs/<batch> sample_<i>.png "
                                f"<i> <label 0|1> ...' (space separated), got {line[:80]!r}")
            rows.append((root / cols[0] / cols[1], int(cols[3])))
    return rows


class PathfinderImages(torch.utils.data.Dataset):
    """``{"tokens": (R*R,) grey + 1, "label": 0|1}`` read from PNGs on demand."""

    def __init__(self, rows: list[tuple[Path, int]], resolution: int):
        self.rows = rows
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image
        path, label = self.rows[i]
        try:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("L"), dtype=np.int64)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read Pathfinder image {str(path)!r}: {exc}") from None
        if pixels.shape != (self.resolution, self.resolution):
            raise DataError(f"{str(path)!r}: expected a {self.resolution}x{self.resolution} image, "
                            f"got {pixels.shape[1]}x{pixels.shape[0]}")
        return {"tokens": torch.from_numpy(pixels.reshape(-1) + 1), "label": label}


def find_root(data_dir: str | Path, resolution: int | None) -> tuple[Path, int]:
    data_dir = Path(data_dir)
    resolutions = [resolution] if resolution else list(SETTINGS)
    for r in resolutions:
        for root in (data_dir / f"pathfinder{r}" / SUBDIR, data_dir / SUBDIR, data_dir):
            if (root / "metadata").is_dir() and (root.parent.name == f"pathfinder{r}" or
                                                 root.name == f"pathfinder{r}" or resolution):
                return root, r
    r = resolution or 32
    raise DataError(f"Pathfinder {r} px data not found: expected "
                    f"{str(dataset_dir(data_dir, r) / 'metadata')!r}. Create it with "
                    f"'rmaat generate pathfinder --out {data_dir} --resolution {r}'")


def load_split(data_dir: str | Path, split: str,
               max_len: int | None = None) -> tuple[TaskSpec, PathfinderImages]:
    """``max_len`` picks the resolution (1024, 4096 or 16384 = Path-X); None finds one, 32 first."""
    check_split(split)
    resolution = None
    if max_len is not None:
        side = math.isqrt(max_len) if isinstance(max_len, int) and max_len > 0 else 0
        if side * side != max_len or side not in SETTINGS:
            raise ConfigError(f"max_len = {max_len!r}: Pathfinder images are "
                              f"{', '.join(str(r * r) for r in SETTINGS)} pixel tokens "
                              f"({', '.join(map(str, SETTINGS))} px)")
        resolution = side
    root, resolution = find_root(data_dir, resolution)
    rows = read_metadata(root)
    n_train = int(round(SPLIT_FRACTIONS[0] * len(rows)))
    n_val = int(round(SPLIT_FRACTIONS[1] * len(rows)))
    part = {"train": rows[:n_train], "val": rows[n_train:n_train + n_val],
            "test": rows[n_train + n_val:]}[split]
    spec = TaskSpec(name="pathfinder", vocab_size=VOCAB_SIZE, n_classes=2,
                    max_len=resolution * resolution, pad_id=PAD_ID, pair=False)
    return spec, PathfinderImages(part, resolution)
