"""Exact resume: stopping a run and rerunning it gives the uninterrupted run, bit for bit."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from astro_rmaat.config import from_dict, to_dict
from model_fixtures import one_thread, untimed  # noqa: F401  (one_thread: autouse, one intra-op thread)
from rmaat_model.checkpoint import BEST_FILE, MODEL_FILE, load_ckpt
from rmaat_model.metrics import read_metrics
from rmaat_model.train import RESULTS_FILE, train
from rmaat_model.train_config import TrainConfig

def cfg(method: str = "amrb") -> TrainConfig:
    """Dropout on (the RNG state must travel in the checkpoint), 4 segments, 10 steps,
    an evaluation every 4 steps so the interruptions fall inside evaluation windows."""
    data = to_dict(TrainConfig())
    data.update(task="recall", max_len=32, batch_size=16, steps=10, eval_every=4, seed=7,
                device="cpu", method=method)
    data["model"].update(arch="rmaat", d_model=16, n_heads=2, n_layers=1, d_ff=32,
                         dropout=0.2, segment_len=8, n_mem=2, retention="none")
    data["optim"].update(lr=3e-3, warmup_steps=3)
    return from_dict(TrainConfig, data)


def assert_same_weights(a, b):
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].dtype == tb[k].dtype
        assert (ta[k] == tb[k]).all(), f"{k} differs after resume"


@pytest.mark.parametrize("method", ["amrb", "bptt"])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, method):
    c = cfg(method)
    full = train(c, tmp_path / "full", progress=False)

    part = tmp_path / "part"
    train(c, part, stop_after=3, progress=False)             # stops mid-window, before eval 1
    assert load_ckpt(part / "ckpt.pt")["step"] == 3
    assert not (part / "meta.json").exists()
    train(c, part, stop_after=4, progress=False)             # crosses the evaluation at step 4
    assert load_ckpt(part / "ckpt.pt")["step"] == 7
    assert not (part / "meta.json").exists()
    train(c, part, progress=False)                           # runs to the end
    assert (part / "meta.json").is_file()

    assert untimed(read_metrics(part)) == untimed(read_metrics(full))
    assert_same_weights(part / MODEL_FILE, full / MODEL_FILE)
    assert_same_weights(part / BEST_FILE, full / BEST_FILE)
    ra = json.loads((part / RESULTS_FILE).read_text())
    rb = json.loads((full / RESULTS_FILE).read_text())
    assert ra == rb
