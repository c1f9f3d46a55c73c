"""When training state is saved: at evaluations, every ckpt_every steps, after ckpt_minutes
of work; wall times only in timing.json (unfinished) and meta.json (finished)."""

from __future__ import annotations

import json

import pytest

from astro_rmaat.config import from_dict, to_dict
from astro_rmaat.errors import ConfigError
from model_fixtures import one_thread  # noqa: F401  (autouse: one intra-op thread)
from rmaat_model import checkpoint as C
from rmaat_model.metrics import METRICS_FILE, read_metrics
from rmaat_model.train import train
from rmaat_model.train_config import TrainConfig


def tiny(**top) -> TrainConfig:
    data = to_dict(TrainConfig())
    data.update(task="recall", max_len=32, batch_size=8, steps=7, eval_every=5, seed=1,
                device="cpu", **{"ckpt_minutes": None, **top})
    data["model"].update(arch="rmaat", d_model=16, n_heads=2, n_layers=1, d_ff=32, dropout=0.1,
                         segment_len=8, n_mem=2, retention="none")
    return from_dict(TrainConfig, data)


@pytest.fixture
def saved_steps(monkeypatch):
    steps: list[int] = []
    original = C.save_ckpt

    def record(path, state):
        steps.append(int(state["step"]))
        original(path, state)
    monkeypatch.setattr(C, "save_ckpt", record)
    return steps


def test_checkpoints_every_ckpt_every_steps_besides_evaluations(tmp_path, saved_steps):
    run = train(tiny(ckpt_every=3), tmp_path / "run", progress=False)
    assert saved_steps == [3, 5, 6, 7]            # 3, 6: ckpt_every; 5: evaluation; 7: the end
    assert [r["step"] for r in read_metrics(run)] == [5.0, 7.0]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["eval_steps"] == [5, 7] and len(meta["eval_elapsed_s"]) == 2
    assert not (run / C.TIMING_FILE).exists()     # its wall times moved into meta.json
    assert "elapsed_s" not in C.load_ckpt(run / C.CKPT_FILE)
    assert "elapsed_s" not in (run / METRICS_FILE).read_text()


def test_checkpoints_by_minutes_of_work(tmp_path, saved_steps):
    # any optimiser step takes longer than 0.06 ms, so every step is past the cadence
    train(tiny(ckpt_minutes=1e-6), tmp_path / "run", progress=False)
    assert saved_steps == [1, 2, 3, 4, 5, 6, 7]


def test_evaluations_only_when_both_cadences_are_off(tmp_path, saved_steps):
    train(tiny(), tmp_path / "run", progress=False)
    assert saved_steps == [5, 7]


def test_an_interrupted_run_keeps_its_wall_time_in_timing_json(tmp_path):
    run = train(tiny(ckpt_every=2), tmp_path / "run", stop_after=3, progress=False)
    timing = json.loads((run / C.TIMING_FILE).read_text())
    assert timing["elapsed_s"] > 0 and timing["eval_elapsed_s"] == []
    assert not (run / "meta.json").exists()


@pytest.mark.parametrize("key, value", [("ckpt_every", 0), ("ckpt_minutes", -1.0),
                                        ("ckpt_every", 1.5)])
def test_bad_cadence_is_a_config_error(key, value):
    with pytest.raises(ConfigError, match=key):
        tiny(**{key: value})
