"""Training loop: run layout, best-on-validation checkpoint, schedule, bad input, CLI."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from astro_rmaat.config import from_dict, to_dict
from model_fixtures import one_thread, untimed  # noqa: F401  (one_thread: autouse, one intra-op thread)
from astro_rmaat.errors import ConfigError, DataError, RunExistsError
from rmaat_model.evaluate import evaluate
from rmaat_model.checkpoint import BEST_FILE, CKPT_FILE, MODEL_FILE, load_ckpt, load_weights, save_ckpt
from rmaat_model.metrics import METRICS_FILE, read_metrics
from rmaat_model.optim import WarmupCosine, make_optimizer, param_groups
from rmaat_model import train as train_module
from rmaat_model.model import build_model, footprint
from rmaat_model.model_config import ModelConfig
from rmaat_model.train import RESULTS_FILE, train
from rmaat_model.train_config import TrainConfig, load_data, model_config_for


def tiny(**overrides) -> TrainConfig:
    """A small RMAAT on 'recall' (4 segments of 8 tokens) that trains in a second or two."""
    data = to_dict(TrainConfig())
    data.update(task="recall", max_len=32, batch_size=16, steps=6, eval_every=3, seed=3,
                device="cpu")
    data["model"].update(arch="rmaat", d_model=16, n_heads=2, n_layers=1, d_ff=32, dropout=0.1,
                         segment_len=8, n_mem=2, retention="none")
    data["optim"].update(lr=3e-3, warmup_steps=2)
    for key, value in overrides.items():
        node = data
        *path, last = key.split("__")
        for part in path:
            node = node[part]
        node[last] = value
    return from_dict(TrainConfig, data)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_run_layout_and_best_checkpoint(tmp_path):
    """A finished run holds every file; the reported checkpoint is the best on validation
    (its val accuracy is the maximum in metrics.csv), and evaluate() re-derives the
    test accuracy from the files alone."""
    run = train(tiny(), tmp_path / "run", progress=False)
    for name in ("config.json", "meta.json", METRICS_FILE, MODEL_FILE, BEST_FILE, CKPT_FILE,
                 RESULTS_FILE):
        assert (run / name).is_file(), name
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [3, 6]
    res = json.loads((run / RESULTS_FILE).read_text())
    best_row = max(rows, key=lambda r: r["val_acc"])
    assert res["best_step"] == best_row["step"]
    assert res["val_acc"] == pytest.approx(best_row["val_acc"], abs=1e-12)
    assert 0.0 <= res["test_acc"] <= 1.0
    assert res["majority"]["test_acc"] < 0.25          # 8 balanced classes
    again = evaluate(run, "test")
    assert again["acc"] == pytest.approx(res["test_acc"], abs=1e-12)
    assert again["n"] == res["n_test"]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["stage"] == "train"


def test_finished_run_is_never_overwritten(tmp_path):
    run = train(tiny(steps=3), tmp_path / "run", progress=False)
    before = {p.name: sha(p) for p in run.iterdir() if p.is_file()}
    with pytest.raises(RunExistsError, match="finished run"):
        train(tiny(steps=3), run, progress=False)
    with pytest.raises(RunExistsError, match="finished run"):
        train(tiny(steps=4), run, progress=False)
    assert {p.name: sha(p) for p in run.iterdir() if p.is_file()} == before


def test_wall_clock_budget_stops_early_and_still_finishes(tmp_path):
    """max_minutes spent after the first step: evaluate, keep the best, report, finish."""
    run = train(tiny(steps=50, max_minutes=1e-4), tmp_path / "run", progress=False)
    res = json.loads((run / RESULTS_FILE).read_text())
    assert res["steps_done"] == 1 and res["best_step"] == 1
    assert [r["step"] for r in read_metrics(run)] == [1]
    assert (run / "meta.json").is_file()


def test_unknown_task_is_a_config_error():
    with pytest.raises(ConfigError, match="'sudoku'.*expected one of"):
        tiny(task="sudoku")


@pytest.mark.parametrize("arch", ["rmaat", "rmt", "elastic", "transformer"])
def test_footprint_counts_what_the_built_model_holds(arch):
    """Counted on the meta device, without allocating: the built model's own counts."""
    mcfg = ModelConfig(arch=arch, retention="learned" if arch == "rmaat" else "none", d_model=32, n_mem=4)
    fp = footprint(mcfg)
    model = build_model(mcfg)
    assert fp.parameters == sum(p.numel() for p in model.parameters())
    assert fp.buffers == sum(b.numel() for b in model.buffers())
    name, shape = fp.largest
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert tuple(tensors[name].shape) == shape
    assert tensors[name].numel() == max(t.numel() for t in tensors.values())


def test_a_model_larger_than_memory_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """Weights, gradients and AdamW's two moments (4 float32 copies) plus buffers against the
    device's memory: one byte short refuses, naming the sizes and the largest tensor; exactly
    enough passes (and trains)."""
    cfg = tiny()
    fp = footprint(model_config_for(cfg, load_data(cfg, splits=("train",))[0]))
    need = (4 * fp.parameters + fp.buffers) * 4
    monkeypatch.setattr(train_module, "device_memory_bytes", lambda device: need - 1)
    with pytest.raises(ConfigError, match=rf"n_mem = 2.*{fp.parameters:,} parameters.*"
                                          rf"largest tensor is {fp.largest[0]}"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(train_module, "device_memory_bytes", lambda device: need)
    train(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / RESULTS_FILE).is_file()


def test_data_dir_without_files_writes_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = tiny(task="listops", data_dir=str(empty), max_len=None)
    with pytest.raises(DataError, match="basic_train.tsv"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    run = train(tiny(), tmp_path / "run", stop_after=2, progress=False)
    assert (run / CKPT_FILE).is_file() and not (run / "meta.json").exists()
    (run / CKPT_FILE).write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(DataError, match="ckpt.pt.*corrupted"):
        train(tiny(), run, progress=False)


def test_resume_with_incompatible_config_is_refused(tmp_path):
    run = train(tiny(), tmp_path / "run", stop_after=2, progress=False)
    ckpt = sha(run / CKPT_FILE)
    with pytest.raises(RunExistsError, match="different config"):
        train(tiny(optim__lr=1e-2), run, progress=False)
    assert sha(run / CKPT_FILE) == ckpt


def _as_if_older(run: Path, drop: list[str]) -> None:
    """Make an interrupted run look written by a version before the fields ``drop``
    ('a' or 'a.b'): they leave config.json and the checkpoint's copy of the config."""
    def strip(cfg: dict) -> dict:
        for key in drop:
            *path, last = key.split(".")
            node = cfg
            for part in path:
                node = node[part]
            del node[last]
        return cfg
    (run / "config.json").write_text(json.dumps(strip(json.loads((run / "config.json").read_text()))))
    state = load_ckpt(run / CKPT_FILE)
    state["config"] = strip(state["config"])
    save_ckpt(run / CKPT_FILE, state)


def test_a_run_interrupted_under_an_older_version_resumes(tmp_path):
    """Fields added since a run was interrupted take the value it was made with, so the same
    command resumes it, to the bytes of an uninterrupted run."""
    whole = train(tiny(), tmp_path / "whole", progress=False)
    run = train(tiny(), tmp_path / "run", stop_after=2, progress=False)
    _as_if_older(run, ["precision", "compile", "threads", "shards", "model.retention_range"])
    train(tiny(), run, progress=False)
    assert sha(run / MODEL_FILE) == sha(whole / MODEL_FILE)


def test_a_run_resumes_with_another_count_of_dataloader_workers_to_the_same_bytes(tmp_path):
    """num_workers changes no number (train_config.RESUME_FREE): a run interrupted with none
    resumes with one, ends bit-identical to an uninterrupted run, and its config.json records
    the new count; another field changed beside it is still refused, and named."""
    whole = train(tiny(), tmp_path / "whole", progress=False)
    run = train(tiny(), tmp_path / "run", stop_after=2, progress=False)
    ckpt = sha(run / CKPT_FILE)
    with pytest.raises(RunExistsError, match=r"optim\.lr: stored 0\.003, given 0\.01"):
        train(tiny(num_workers=1, optim__lr=1e-2), run, progress=False)
    assert sha(run / CKPT_FILE) == ckpt
    train(tiny(num_workers=1), run, progress=False)
    for name in (MODEL_FILE, BEST_FILE, RESULTS_FILE):
        assert sha(run / name) == sha(whole / name), name
    assert untimed(read_metrics(run)) == untimed(read_metrics(whole))
    assert json.loads((run / "config.json").read_text())["num_workers"] == 1


def test_a_run_resumes_with_another_checkpoint_cadence_to_the_same_bytes(tmp_path, monkeypatch):
    """When checkpoints are written changes no number (train_config.RESUME_FREE): a run
    interrupted under the defaults resumes checkpointing every step, and by time off, and ends
    bit-identical to an uninterrupted run; config.json records the new cadence."""
    whole = train(tiny(), tmp_path / "whole", progress=False)
    run = train(tiny(), tmp_path / "run", stop_after=2, progress=False)
    written = []
    real = train_module.Trainer.save_checkpoint

    def spy(self, *args, **kwargs):
        written.append(self.step)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(train_module.Trainer, "save_checkpoint", spy)
    train(tiny(ckpt_every=1, ckpt_minutes=None), run, progress=False)
    assert written[:3] == [3, 4, 5]
    for name in (MODEL_FILE, BEST_FILE, RESULTS_FILE):
        assert sha(run / name) == sha(whole / name), name
    assert untimed(read_metrics(run)) == untimed(read_metrics(whole))
    stored = json.loads((run / "config.json").read_text())
    assert stored["ckpt_every"] == 1 and stored["ckpt_minutes"] is None


def test_an_older_run_of_another_block_layout_is_refused_by_name(tmp_path):
    """A run stored before ``norm`` existed trained pre-LN blocks: today's default (post) is
    another model, and the refusal names the field with both values."""
    run = train(tiny(), tmp_path / "run", stop_after=2, progress=False)
    _as_if_older(run, ["model.norm"])
    ckpt = sha(run / CKPT_FILE)
    with pytest.raises(RunExistsError, match=r"model\.norm: stored 'pre', given 'post'"):
        train(tiny(), run, progress=False)
    assert sha(run / CKPT_FILE) == ckpt
    with pytest.raises(RunExistsError, match=r"optim\.lr: stored 0\.003, given 0\.01"):
        train(tiny(model__norm="pre", optim__lr=1e-2), run, progress=False)
    train(tiny(model__norm="pre"), run, progress=False)   # the stored layout resumes it
    assert (run / "meta.json").is_file()


def test_an_older_learned_run_is_unbounded_and_resumes_as_such(tmp_path):
    """A learned table stored before ``retention_range`` was unbounded: the default command
    (today "unit") is refused with the field named, and "free" resumes it to the bytes of an
    uninterrupted free run."""
    from model_fixtures import write_retention
    ret = write_retention(tmp_path / "retention.json")
    learned = dict(model__retention="learned", model__retention_file=str(ret), optim__retention_lr=0.5)
    whole = train(tiny(model__retention_range="free", **learned), tmp_path / "whole", progress=False)
    run = train(tiny(model__retention_range="free", **learned), tmp_path / "run", stop_after=2, progress=False)
    _as_if_older(run, ["model.retention_range"])
    with pytest.raises(RunExistsError, match=r"model\.retention_range: stored 'free', given 'unit'"):
        train(tiny(**learned), run, progress=False)
    train(tiny(model__retention_range="free", **learned), run, progress=False)
    assert sha(run / MODEL_FILE) == sha(whole / MODEL_FILE)


def test_an_older_synthetic_run_with_a_null_max_len_is_read_at_64_tokens(tmp_path):
    """Before a synthetic task's length followed segment_len, a null max_len meant 64 tokens:
    an interrupted run stored that way is not resumed on data of another length."""
    run = train(tiny(max_len=None), tmp_path / "run", stop_after=2, progress=False)
    assert json.loads((run / "config.json").read_text())["max_len"] == 32   # 4 segments of 8
    _as_if_older(run, ["max_len"])
    with pytest.raises(RunExistsError, match=r"max_len: stored 64, given 32"):
        train(tiny(max_len=None), run, progress=False)


def test_synthetic_tasks_span_four_segments_of_the_model_by_default():
    """recall and assoc without max_len: 4 segments of model.segment_len, resolved in the
    config (so config.json records it); an LRA task keeps its own length (None)."""
    from rmaat_model.model_config import ModelConfig
    from rmaat_model.train_config import load_data
    for task in ("recall", "assoc"):
        assert TrainConfig(task=task).max_len == 4 * ModelConfig().segment_len
        assert TrainConfig(task=task, model=ModelConfig(segment_len=16)).max_len == 64
        assert TrainConfig(task=task, max_len=96, model=ModelConfig(segment_len=32)).max_len == 96
    assert TrainConfig(task="listops").max_len is None
    spec, data = load_data(TrainConfig(task="assoc", model=ModelConfig(segment_len=32)), splits=("val",))
    assert spec.max_len == 128 and data["val"].tokens.shape[1] == 128
    assert set(data["val"].ages.tolist()) == {1, 2, 3}      # facts 1..T-1 segments before the query


def test_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="steps"):
        tiny(steps=0)
    with pytest.raises(ConfigError, match="optim.lr"):
        tiny(optim__lr=-1.0)
    with pytest.raises(ConfigError, match="method"):
        tiny(method="magic")
    with pytest.raises(ConfigError, match="precision = 'fp16': expected one of 'fp32', 'bf16'"):
        tiny(precision="fp16")
    with pytest.raises(ConfigError, match="precision = 'half': expected 'fp32' or 'bf16'"):
        TrainConfig(task="recall", precision="half")


def test_bf16_training_follows_the_float32_run(tmp_path):
    """precision = 'bf16': the steps run under autocast, the weights stay float32; six steps
    from the same seed land close to the float32 run (bf16 has 8 significant bits), and the
    evaluations, in float32, read those weights."""
    runs = {p: train(tiny(precision=p), tmp_path / p, progress=False) for p in ("fp32", "bf16")}
    rows = {p: read_metrics(r) for p, r in runs.items()}
    for a, b in zip(rows["fp32"], rows["bf16"]):
        assert a["step"] == b["step"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-2)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=2e-2)
    w = {p: load_weights(r, MODEL_FILE, "cpu").state_dict() for p, r in runs.items()}
    assert w["bf16"].keys() == w["fp32"].keys()
    assert all(t.dtype == w["fp32"][name].dtype for name, t in w["bf16"].items())
    assert any(not torch.equal(t, w["fp32"][name]) for name, t in w["bf16"].items())   # bf16 did run


def test_batch_must_divide_over_processes():
    from rmaat_model.distributed import DistEnv, StepBatchSampler
    with pytest.raises(ConfigError, match="batch_size = 5"):
        StepBatchSampler(100, 5, 0, DistEnv(rank=0, world_size=2), start=0, stop=1)


def test_warmup_cosine_schedule():
    s = WarmupCosine(warmup=10, total=110, floor=0.1)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    after = [s(t) for t in range(10, 111)]
    assert all(a >= b for a, b in zip(after, after[1:]))      # monotone decay
    assert after[0] == pytest.approx(1.0) and after[-1] == pytest.approx(0.1)
    assert s(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def build_model_for(cfg: TrainConfig):
    from rmaat_model.data.synthetic import task_spec
    from rmaat_model.model import build_model
    from rmaat_model.train_config import model_config_for
    torch.manual_seed(cfg.seed)
    return build_model(model_config_for(cfg, task_spec(cfg.max_len)))


def test_learned_retention_gets_its_own_group(tmp_path):
    """A learned schedule trains at retention_lr without weight decay; matrices decay,
    biases and norms do not."""
    from model_fixtures import write_retention
    ret = write_retention(tmp_path / "retention.json")
    cfg = tiny(model__retention="learned", model__retention_file=str(ret))
    model = build_model_for(cfg)
    groups = {g["name"]: g for g in param_groups(model, cfg.optim)}
    assert groups["retention"]["weight_decay"] == 0.0
    assert groups["retention"]["lr"] == cfg.optim.retention_lr
    assert all(p.ndim >= 2 for p in groups["decay"]["params"])
    assert groups["no_decay"]["weight_decay"] == 0.0
    n_all = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups.values()) == n_all
    opt, sched = make_optimizer(model, cfg)
    lrs = [g["lr"] for g in opt.param_groups]
    assert cfg.optim.retention_lr * sched.lr_lambdas[0](0) in lrs


@pytest.mark.parametrize("bound", ["unit", "free"])
def test_learned_retention_stays_in_its_range(tmp_path, bound):
    """At a retention rate that moves each entry by about 1 per step, the trained table is
    projected onto [0, 1] after every step ("unit", the default) and leaves it when "free";
    either way the row the 4-segment sequences read has moved away from its LTP start."""
    from model_fixtures import write_retention
    ret = write_retention(tmp_path / "retention.json")
    cfg = tiny(model__retention="learned", model__retention_file=str(ret), model__retention_range=bound,
               optim__retention_lr=1.0)
    start = build_model_for(cfg).rf_table.detach()[3, :4].clone()
    assert bool(((start > 0) & (start < 1)).all())
    run = train(cfg, tmp_path / "run", progress=False)
    table = load_weights(run, MODEL_FILE, "cpu").rf_table.detach()
    row = table[3, :3]                      # RF(1..3, 4); RF(4, 4) is never read (the last segment)
    assert float((row - start[:3]).abs().max()) > 0.3
    inside = bool(((table >= 0) & (table <= 1)).all())
    assert inside == (bound == "unit")
    if bound == "unit":
        assert bool(((row == 0) | (row == 1)).any())   # the projection was active


@pytest.mark.slow
def test_cli_train_evaluate_and_errors(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")      # the subprocesses: one intra-op thread
    proc = run_cli("train", "--task", "recall", "--show-defaults", "--set", "optim.lr=0.002")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["task"] == "recall" and shown["optim"]["lr"] == 0.002
    bad = run_cli("train", "--task", "sudoku", "--set", "optim.lr=0.1", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "sudoku" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x").exists()
    cfg_file = tmp_path / "tiny.json"
    cfg_file.write_text(json.dumps(to_dict(tiny(steps=3))))
    out = tmp_path / "run"
    proc = run_cli("train", "--config", cfg_file, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / RESULTS_FILE).read_text())
    ev = run_cli("evaluate", out, "--split", "test")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["acc"] == pytest.approx(res["test_acc"], abs=1e-12)
    again = run_cli("train", "--config", cfg_file, "--out", out, "--quiet")
    assert again.returncode == 2 and "finished run" in again.stderr


@pytest.mark.parametrize("threads, shards, expected", [(None, 1, 1), (2, 1, 2), (None, 2, 1), (2, 2, 2)])
def test_training_uses_the_configured_cpu_threads_and_restores_them(threads, shards, expected, tmp_path,
                                                                     monkeypatch):
    """TrainConfig.threads (None: one intra-op thread per process, also with batch shards,
    which run on threads of their own) holds while the run trains; the caller's setting comes
    back afterwards."""
    from rmaat_model import train as train_mod

    seen = []

    class Probe:
        def __init__(self, *args, **kwargs):
            seen.append(torch.get_num_threads())

        def run(self, stop_after):
            return False

        def finish(self):
            pass

    monkeypatch.setattr(train_mod, "Trainer", Probe)
    torch.set_num_threads(3)
    train(tiny(threads=threads, shards=shards, device="cpu"), tmp_path / "run", progress=False)
    assert seen == [expected] and torch.get_num_threads() == 3


def test_batch_shards_are_checked_and_train_to_the_same_bytes_on_one_thread_or_two(tmp_path, monkeypatch):
    """TrainConfig.shards reaches every step; the run's numbers follow the shards, not the
    threads: two shards in turn on one thread (threads = 1) and at once on two (threads unset:
    a thread per shard) write the same bytes."""
    for bad, match in ((dict(shards=0), r"shards = 0: expected a positive integer"),
                       (dict(shards="2"), r"shards = '2': expected an integer"),
                       (dict(shards=17), r"shards = 17 is more than batch_size = 16"),
                       (dict(shards=2, threads=2, amrb_overlap=True), r"shards = 2 and amrb_overlap = true"),
                       (dict(shards=2, compile=True), r"shards = 2 needs the eager block stack")):
        with pytest.raises(ConfigError, match=match):
            tiny(**bad)
    asked = []
    real = train_module.forward_backward

    def spy(*args, **kwargs):
        asked.append((kwargs["shards"], kwargs["shard_threads"], torch.get_num_threads()))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "forward_backward", spy)
    cfg = tiny(shards=2, threads=1)
    runs = [train(cfg, tmp_path / "one", progress=False), train(tiny(shards=2), tmp_path / "two",
                                                                progress=False)]
    assert asked == [(2, 1, 1)] * cfg.steps + [(2, 2, 1)] * cfg.steps   # in turn; a thread each
    for name in (MODEL_FILE, BEST_FILE, RESULTS_FILE):
        assert sha(runs[0] / name) == sha(runs[1] / name), name
    assert untimed(read_metrics(runs[0])) == untimed(read_metrics(runs[1]))
    whole = train(tiny(), tmp_path / "whole", progress=False)     # one shard: other dropout masks
    assert sha(whole / MODEL_FILE) != sha(runs[0] / MODEL_FILE)


def test_amrb_overlap_is_checked_and_trains_to_the_same_bytes_twice(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="amrb_overlap = true needs threads >= 2.*threads = None"):
        tiny(amrb_overlap=True)
    with pytest.raises(ConfigError, match="amrb_overlap = true runs replays on a thread that torch.autocast"):
        tiny(amrb_overlap=True, threads=2, precision="bf16")
    with pytest.raises(ConfigError, match="amrb_overlap = true overlaps AMRB's replays; method = 'bptt'"):
        tiny(amrb_overlap=True, threads=2, method="bptt")
    with pytest.raises(ConfigError, match="amrb_overlap = 'yes': expected true or false"):
        tiny(amrb_overlap="yes")
    for arch, scope in (("transformer", "sequence"), ("at", "sequence"), ("at", "segment")):   # no replay to overlap
        with pytest.raises(ConfigError, match=f"model.arch = '{arch}' runs each sequence in one pass"):
            tiny(amrb_overlap=True, threads=2, model__arch=arch, model__at_scope=scope)
    cfg = tiny(amrb_overlap=True, threads=2)
    asked = []
    real = train_module.forward_backward

    def spy(*args, **kwargs):
        asked.append((kwargs["overlap"], torch.get_num_threads()))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "forward_backward", spy)
    runs = [train(cfg, tmp_path / name, progress=False) for name in ("a", "b")]
    assert asked == [(True, 2)] * 2 * cfg.steps
    for name in (MODEL_FILE, METRICS_FILE, RESULTS_FILE):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
