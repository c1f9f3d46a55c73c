"""Multi-process training: two gloo processes under torchrun make the same update as one
process on the same global batch (to float32 round-off)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from astro_rmaat.config import from_dict, to_dict
from model_fixtures import one_thread  # noqa: F401  (autouse: one intra-op thread)
from rmaat_model.distributed import DistEnv, StepBatchSampler, average_gradients
from rmaat_model.data.synthetic import task_spec
from rmaat_model.model import build_model
from rmaat_model.checkpoint import MODEL_FILE
from rmaat_model.metrics import read_metrics
from rmaat_model.train import seed_everything, train
from rmaat_model.train_config import TrainConfig, model_config_for


def test_rank_batches_form_the_single_process_batch():
    """At every step (across epochs) the two ranks' local batches together are exactly the
    batch one process draws — the data half of the equivalence."""
    n, B = 50, 8
    one = list(StepBatchSampler(n, B, 5, DistEnv(), start=0, stop=15))
    r0 = list(StepBatchSampler(n, B, 5, DistEnv(rank=0, world_size=2), start=0, stop=15))
    r1 = list(StepBatchSampler(n, B, 5, DistEnv(rank=1, world_size=2), start=0, stop=15))
    assert len(one) == len(r0) == len(r1) == 15
    for a, b, c in zip(one, r0, r1):
        assert len(b) == len(c) == B // 2
        assert sorted(a) == sorted(b + c)
    # resuming at step 9 yields the same batches as the uninterrupted stream
    assert list(StepBatchSampler(n, B, 5, DistEnv(), start=9, stop=15)) == one[9:]
    assert one[0] != one[6]            # a new epoch draws a new permutation


def test_average_gradients_is_a_noop_for_one_process():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    average_gradients([p], DistEnv())
    assert torch.equal(p.grad, torch.full((3,), 2.0))


def config(method: str, shards: int = 1) -> TrainConfig:
    data = to_dict(TrainConfig())
    data.update(task="recall", max_len=32, batch_size=16, steps=2, eval_every=2, seed=11,
                device="cpu", method=method, eval_batches=4, shards=shards)
    data["model"].update(arch="rmaat", d_model=16, n_heads=2, n_layers=1, d_ff=32,
                         dropout=0.0, segment_len=8, n_mem=2, retention="none")
    # eps >> |gradient| makes AdamW's step linear in the gradient (lr * m / eps): its
    # 1/sqrt(v) normalisation would otherwise blow the round-off of near-zero gradient
    # entries up to O(lr) sign flips, hiding what is compared here.
    data["optim"].update(lr=0.3, eps=1.0, warmup_steps=0, grad_clip=1.0, weight_decay=0.0)
    return from_dict(TrainConfig, data)


@pytest.mark.slow
@pytest.mark.parametrize("shards", [1, 2])
def test_two_gloo_processes_equal_one(tmp_path, repo_root, shards):
    """torchrun, 2 processes x 8 sequences vs 1 process x 16, AMRB (many backward calls per
    step), two optimiser steps: the weights agree to round-off, and they moved. With two batch
    shards (dropout off: a sharded step is the whole batch's to round-off) in every process,
    on two threads each, beside the all-reduce: the same."""
    cfg = config("amrb", shards)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(to_dict(cfg)))
    env = dict(os.environ, PYTHONPATH=str(repo_root), OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "rmaat_app", "train", "--config", str(cfg_file), "--out",
         str(tmp_path / "two"), "--quiet"],
        env=env, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    meta = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert meta["world_size"] == 2

    one = train(cfg, tmp_path / "one", progress=False)
    seed_everything(cfg.seed)                                   # the initial weights
    model0 = build_model(model_config_for(cfg, task_spec(32)))
    w0 = {k: p.detach() for k, p in model0.named_parameters()}

    w2 = load_file(str(tmp_path / "two" / MODEL_FILE))
    w1 = load_file(str(one / MODEL_FILE))
    assert w1.keys() == w2.keys()
    for k in w0:                                        # every parameter (buffers are fixed)
        d1, d2 = w1[k] - w0[k], w2[k] - w0[k]          # the update of one and of two processes
        scale = float(d1.abs().max())
        assert scale > 1e-5, f"{k} did not move"
        err = float((d1 - d2).abs().max())
        assert err <= 1e-4 * scale + 1e-7, f"{k}: updates differ by {err:.3g} (update {scale:.3g})"
    r1, r2 = read_metrics(one), read_metrics(tmp_path / "two")
    assert r1[-1]["train_loss"] == pytest.approx(r2[-1]["train_loss"], rel=1e-5)
    assert r1[-1]["val_acc"] == pytest.approx(r2[-1]["val_acc"], abs=1e-9)


# Run by torchrun: train() under a 2-process gloo group, reporting whether the DDP wrapper
# (its reducer holds the group) is still alive when the group is destroyed, and how many of
# gloo's threads run before and after it is.
TEARDOWN_PROBE = r"""
import json, os, sys, weakref
def gloo_threads():
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as fh:
                names.append(fh.read().strip())
        except OSError:   # a thread that ended while listed
            pass
    return sum("gloo" in name for name in names)
import rmaat_model.train as T
from astro_rmaat.config import from_dict
from rmaat_model.train_config import TrainConfig
wrapped, report = [], {}
wrap, teardown = T.D.wrap, T.D.teardown
def watched_wrap(model, env):
    ddp = wrap(model, env)
    wrapped.append(weakref.ref(ddp))
    return ddp
def watched_teardown(env):
    report["wrappers_alive"] = sum(r() is not None for r in wrapped)
    report["wrappers"] = len(wrapped)
    report["gloo_threads_before"] = gloo_threads() > 0
    teardown(env)
    report["gloo_threads_after"] = gloo_threads()
T.D.wrap, T.D.teardown = watched_wrap, watched_teardown
if sys.argv[4] == "fails":   # the run ends in an error, raised where the trainer is ``self``
    def finish(self):
        raise RuntimeError("the run fails at its end")
    T.Trainer.finish = finish
cfg = from_dict(TrainConfig, json.loads(open(sys.argv[1]).read()))
try:
    T.train(cfg, sys.argv[2], progress=False)
except RuntimeError as exc:
    report["error"] = str(exc)
with open(os.path.join(sys.argv[3], "probe" + os.environ["RANK"] + ".json"), "w") as fh:   # a file per rank:
    json.dump(report, fh)                                                                     # their stdouts interleave
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
@pytest.mark.parametrize("ending", ["finishes", "fails"])
def test_the_process_group_is_destroyed_after_the_model_that_uses_it(ending, tmp_path, repo_root):
    """train() under torchrun lets go of the DDP wrapper before it destroys the process
    group, and nothing else keeps the group: gloo's threads run up to the teardown and none is
    left after it, so none is still running at interpreter exit (where one dropping a
    collective's tensor aborted the process); also when the run ends in an error, whose
    traceback holds the trainer."""
    cfg_file, probe = tmp_path / "cfg.json", tmp_path / "probe.py"
    cfg_file.write_text(json.dumps(to_dict(config("bptt"))))
    probe.write_text(TEARDOWN_PROBE)
    env = dict(os.environ, PYTHONPATH=str(repo_root), OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(probe), str(cfg_file), str(tmp_path / "run"), str(tmp_path), ending],
        env=env, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in (0, 1):
        report = json.loads((tmp_path / f"probe{rank}.json").read_text())
        expected = {"wrappers_alive": 0, "wrappers": 1, "gloo_threads_before": True, "gloo_threads_after": 0}
        if ending == "fails":
            expected["error"] = "the run fails at its end"
        assert report == expected, (rank, report)


@pytest.mark.slow
def test_ctrl_c_under_torchrun_stops_every_rank_at_one_step_and_resume_gives_the_uninterrupted_bytes(
        tmp_path, repo_root):
    """Ctrl-C reaches torchrun and both workers (a terminal's process group), and the agent
    passes it on to the workers again: the ranks agree on one step, rank 0's checkpoint is at
    the step it names, and the same command then ends with the bytes of an uninterrupted
    two-process run."""
    import hashlib
    import re
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=str(repo_root), OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)

    def command(out):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "rmaat_app", "train", "--task", "recall", "--quiet", "--out", str(out),
                *[a for s in ("steps=300", "batch_size=16", "ckpt_every=20", "eval_every=1000",
                              "max_len=64", "model.d_model=16", "model.n_heads=2", "model.n_layers=1",
                              "model.d_ff=32", "model.segment_len=16", "model.n_mem=2")
                  for a in ("--set", s)]]

    ref = subprocess.run(command(tmp_path / "ref"), env=env, cwd=repo_root, capture_output=True, text=True,
                         timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    run = tmp_path / "run"
    proc = subprocess.Popen(command(run), env=env, cwd=repo_root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    t0 = time.monotonic()
    while not (run / "ckpt.pt").is_file():   # the first cadence checkpoint: the loop is under way
        assert proc.poll() is None and time.monotonic() - t0 < 240, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    said = re.findall(r"interrupted \(Ctrl-C\) at step (\d+) of 300: checkpoint written", err)
    assert len(said) == 1, err[-3000:]                      # rank 0 alone reports
    assert not (run / "meta.json").exists()
    assert torch.load(run / "ckpt.pt", weights_only=False)["step"] == int(said[0]) < 300
    res = subprocess.run(command(run), env=env, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("model.safetensors", "best.safetensors", "ckpt.pt", "metrics.csv", "results.json"):
        digest = [hashlib.sha256((d / name).read_bytes()).hexdigest() for d in (run, tmp_path / "ref")]
        assert digest[0] == digest[1], f"{name} differs after Ctrl-C and resume"
