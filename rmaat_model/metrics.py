"""``metrics.csv`` of a training run: one row per evaluation, written and read only here.

Columns (``METRIC_COLUMNS``): step, epoch, lr, train_loss, train_acc (over the steps since the
last evaluation, all ranks), val_loss, val_acc, best_val_acc. No wall times: the same config
and seed give the same bytes (wall times live in meta.json).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from astro_rmaat import runs
from astro_rmaat.errors import DataError

METRICS_FILE = "metrics.csv"
METRIC_COLUMNS = ("step", "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc",
                  "best_val_acc")


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """The rows so far, atomically (the whole file each time: the checkpoint's rows are the truth)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in METRIC_COLUMNS})
    runs.atomic_write_text(path, buf.getvalue())


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """``metrics.csv`` of a run as a list of rows of floats (an empty cell reads as nan)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise DataError(f"{str(path)!r} does not exist; is {str(run_dir)!r} a training run?")
    with open(path, newline="") as fh:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
                for row in csv.DictReader(fh)]
