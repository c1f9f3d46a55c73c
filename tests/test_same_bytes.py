"""Same config + seed => the same bytes: simulate, fit and a short train, each run twice in
fresh processes (different hash seeds), give identical files; only meta.json may differ
(it is the one home of wall times, host and finish time)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN_SETS = ["max_len=32", "batch_size=8", "steps=4", "eval_every=2", "device=\"cpu\"",
              "model.d_model=16", "model.n_heads=2", "model.n_layers=1", "model.d_ff=32",
              "model.segment_len=8", "model.n_mem=2", "model.dropout=0.1", "ckpt_every=1"]


def rmaat(*args: str, hash_seed: int) -> None:
    env = dict(os.environ, PYTHONHASHSEED=str(hash_seed), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "rmaat_app", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"rmaat {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"


def digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != "meta.json"}


@pytest.mark.slow
def test_simulate_fit_train_twice_give_identical_files(tmp_path):
    """Both runs use the same paths (outputs record where their inputs were), one after the
    other; the first is moved aside before the second starts."""
    root = tmp_path / "run"
    seen = []
    for i in range(2):
        rmaat("simulate", "--set", "protocol.n_cycles=8", "--out", str(root / "sim"), hash_seed=i)
        rmaat("fit", str(root / "sim"), "--models", "exp,hill", "--n-starts", "2",
              "--out", str(root / "fit"), hash_seed=i)
        rmaat("train", "--task", "recall", "--model", "rmaat", "--quiet", "--out", str(root / "train"),
              *[a for s in TRAIN_SETS for a in ("--set", s)],
              "--set", f"model.retention_file=\"{root / 'fit' / 'retention.json'}\"", hash_seed=i)
        seen.append(digests(root))
        root.rename(tmp_path / f"run{i}")
    a, b = seen
    assert {"sim/traces.parquet", "sim/samples.parquet", "fit/fit.json", "fit/retention.json",
            "fit/fit.png", "train/model.safetensors", "train/best.safetensors", "train/ckpt.pt",
            "train/metrics.csv", "train/results.json"} <= set(a)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
