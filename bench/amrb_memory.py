"""AMRB vs full BPTT: activation memory and wall time as the number of segments T grows.

    PYTHONPATH=$PWD python bench/amrb_memory.py [--T 4 8 16 32 64] [--repeats 3] [--retention FILE]

For each T, one RMAAT training step (forward + backward, batch B, T full segments) under
BPTT and under AMRB, measured side by side in one run:
  * peak bytes saved for backward (parameters excluded; storages de-duplicated), plus the
    memory states AMRB keeps — deterministic;
  * peak RSS increase of the step in a fresh process (warm-up step first, heap trimmed);
  * wall time, median of ``--repeats`` interleaved runs in this process (the order alternating
    between rounds), and AMRB / BPTT as the median of each round's ratio with its range; with
    ``--fresh`` each round times each method in a fresh process of its own instead (a warm-up
    step, then the median of ``--fresh-steps`` steps), as a training run meets it: in one
    process the two methods share glibc's allocator, whose thresholds move with what was freed
    before (so under glibc's defaults one method's frees change the other's page faults);
  * minor page faults per step of each method (``getrusage``; under glibc's defaults AMRB,
    freeing each replayed segment's graph, hands memory back and faults it in again; ``--malloc``
    sets the thresholds the ``rmaat`` command sets);
  * where the time goes, per segment: BPTT's forward and backward, AMRB's no-grad first pass,
    its forward and backward with graphs, and its bookkeeping (``run_segments``' ``stats``);
    AMRB's wall ratio is about 1 + no-grad / BPTT, as everything else is BPTT's own work;
  * the whole training state as the paper counts GPU memory: saved tensors + parameters +
    gradients + AdamW's two moments (4 x the parameter bytes);
  * the arithmetic of each step (``torch.utils.flop_counter.FlopCounterMode``: the matrix
    products) and AMRB / BPTT in it: 1 + (T - 1) / (3 T) when a backward's products are twice
    its forward's, the ratio the wall time would show if every FLOP cost the same in both.
``--arch`` picks the memory arch (rmaat, rmt, rlt, elastic; same sizes).
On a busy shared machine use ``--threads 1`` (two threads there were erratic).
Prints ratios BPTT / AMRB. Benchmarks are not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from astro_rmaat.cli_args import ArgumentParser, positive_int, run_main
from astro_rmaat.config import to_dict
from rmaat_model.amrb import forward_backward
from rmaat_model.activation_profile import peak_rss, saved_bytes
from rmaat_model.allocator import tune_malloc
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _schedule import retention_file  # noqa: E402

#: ``--fresh``: one method's steps in a process of their own (argv: the JSON ``fresh_round`` passes)
FRESH = r'''
import json, sys
a = json.loads(sys.argv[1])
if a["malloc"]:
    from rmaat_model.allocator import tune_malloc
    if not tune_malloc():
        sys.exit("--malloc: glibc's malloc only")
import torch
torch.set_num_threads(a["threads"])
from astro_rmaat.config import from_dict
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig
sys.path.insert(0, a["bench"])
from amrb_memory import batch_of, timed_steps
cfg = from_dict(ModelConfig, a["model"])
torch.manual_seed(0)
model = build_model(cfg)
x, y = batch_of(cfg, a["batch"], a["T"])
timed_steps(model, x, y, a["method"], 1)   # warm-up: lazy initialisation, the allocator's first growth
print(json.dumps(timed_steps(model, x, y, a["method"], a["steps"])))
'''


def batch_of(cfg, batch: int, T: int):
    """The benchmark's tokens and labels at T segments (the same in every process)."""
    g = torch.Generator().manual_seed(T)
    x = torch.randint(1, cfg.vocab_size, (batch, T * cfg.segment_len), generator=g)
    y = torch.randint(0, cfg.n_classes, (batch,), generator=g)
    return x, y


def timed_steps(model, x, y, method: str, n: int) -> list[dict]:
    """n training steps (forward + backward, gradients cleared after each): per step its wall
    seconds, ``run_segments``' phase seconds and this process's minor page faults."""
    out = []
    for _ in range(n):
        st: dict = {}
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        forward_backward(model, x, y, method=method, stats=st)
        wall = time.perf_counter() - t0
        out.append({"wall": wall, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0, **st})
        model.zero_grad(set_to_none=True)
    return out


def fresh_round(cfg, args, T: int, method: str) -> dict:
    """``--fresh``: one round of one method in a new process: the median step of its timed steps
    (by wall time), with that step's phases and the median page faults."""
    a = dict(model=to_dict(cfg), batch=args.batch, T=T, method=method, threads=args.threads,
             malloc=args.malloc, steps=args.fresh_steps, bench=os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-c", FRESH, json.dumps(a)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"--fresh: the {method} process at T = {T} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    steps = sorted(json.loads(proc.stdout.strip().splitlines()[-1]), key=lambda st: st["wall"])
    mid = dict(steps[len(steps) // 2])
    mid["faults"] = statistics.median(st["faults"] for st in steps)
    return mid


def main() -> None:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=positive_int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--batch", type=positive_int, default=2)
    ap.add_argument("--segment-len", type=positive_int, default=128)
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--threads", type=positive_int, default=2)
    ap.add_argument("--no-rss", action="store_true", help="skip the fresh-process RSS probes")
    ap.add_argument("--retention", default=None)
    ap.add_argument("--arch", default="rmaat", choices=("rmaat", "rmt", "rlt", "elastic"))
    ap.add_argument("--fresh", action="store_true",
                    help="time each method in a fresh process per round (as a training run meets it), not both in this one")
    ap.add_argument("--fresh-steps", type=positive_int, default=3, help="with --fresh: timed steps per process (median)")
    ap.add_argument("--malloc", action="store_true",
                    help="glibc's thresholds as the rmaat command sets them (rmaat_model.allocator), for both methods "
                         "in this process (the RSS probes' fresh processes keep the defaults)")
    args = ap.parse_args()
    if args.malloc and not tune_malloc():
        sys.exit("--malloc: glibc's malloc only")
    torch.set_num_threads(args.threads)
    rfile, rdesc = retention_file(args.retention)
    cfg = ModelConfig(arch=args.arch, retention="ltp" if args.arch == "rmaat" else "none",
                      retention_file=rfile, segment_len=args.segment_len,
                      max_len=max(args.T) * args.segment_len)
    print(f"{args.arch} d_model={cfg.d_model} heads={cfg.n_heads} layers={cfg.n_layers} d_ff={cfg.d_ff} "
          f"N={cfg.segment_len} M={cfg.n_mem} dropout={cfg.dropout}; batch {args.batch}; "
          f"{args.threads} threads; retention: {rdesc}; malloc: {'rmaat' if args.malloc else 'glibc'} thresholds; "
          f"wall time: {f'a fresh process per method and round, median of {args.fresh_steps} steps' if args.fresh else 'both methods in this process'}")
    torch.manual_seed(0)
    model = build_model(cfg)
    params = list(model.parameters())
    header = (f"{'T':>3} {'saved BPTT':>11} {'saved AMRB':>11} {'ratio':>6} {'RSS BPTT':>9} {'RSS AMRB':>9} "
              f"{'ratio':>6} {'wall BPTT':>9} {'wall AMRB':>9} {'AMRB/BPTT':>9} {'range':>9} {'whole BPTT':>10} "
              f"{'whole AMRB':>10} {'ratio':>6}")
    state_bytes = 4 * sum(p.numel() * p.element_size() for p in params)   # params, grads, 2 Adam moments
    print(header)
    amrb_peak, phases, flops = {}, {}, {}
    for T in args.T:
        x, y = batch_of(cfg, args.batch, T)
        saved = {}
        for method in ("bptt", "amrb"):
            st: dict = {}
            saved[method] = saved_bytes(lambda: forward_backward(model, x, y, method=method, stats=st),
                                        ignore=params)["peak_bytes"] + st.get("stored_memory_bytes", 0)
            model.zero_grad(set_to_none=True)
        walls = {"bptt": [], "amrb": []}
        phase_runs = {"bptt": [], "amrb": []}
        for r in range(args.repeats):   # the order alternates, so a drift of the machine's speed cancels
            for method in (("bptt", "amrb") if r % 2 == 0 else ("amrb", "bptt")):
                st = fresh_round(cfg, args, T, method) if args.fresh else timed_steps(model, x, y, method, 1)[0]
                walls[method].append(st["wall"])
                phase_runs[method].append(st)
        for method in ("bptt", "amrb"):   # deterministic; after the timed rounds, outside them
            with FlopCounterMode(display=False) as counter:
                forward_backward(model, x, y, method=method)
            flops[T, method] = counter.get_total_flops()
            model.zero_grad(set_to_none=True)
        med = lambda method, key: statistics.median(st[key] for st in phase_runs[method])
        phases[T] = {f"{m} {k}": med(m, k) for m, ks in (("bptt", ("forward_s", "backward_s", "faults")),
                     ("amrb", ("nograd_s", "forward_s", "backward_s", "other_s", "faults"))) for k in ks}
        rss = {}
        for method in ("bptt", "amrb"):
            if args.no_rss:
                rss[method] = float("nan")
                continue
            kw = dict(model=to_dict(cfg), batch=args.batch, length=T * cfg.segment_len,
                      method=method, threads=args.threads)
            rss[method] = peak_rss("rmaat_model.activation_profile:training_step", kw)["peak_rss_increase_bytes"]
        wb, wa = statistics.median(walls["bptt"]), statistics.median(walls["amrb"])
        ratios = [a / b for a, b in zip(walls["amrb"], walls["bptt"])]   # each round's pair
        mb = lambda v: f"{v / 2**20:8.1f}M"
        print(f"{T:>3} {mb(saved['bptt']):>11} {mb(saved['amrb']):>11} {saved['bptt'] / saved['amrb']:6.1f} "
              f"{mb(rss['bptt']):>9} {mb(rss['amrb']):>9} {rss['bptt'] / max(rss['amrb'], 1):6.1f} "
              f"{wb:8.2f}s {wa:8.2f}s {statistics.median(ratios):9.2f} "
              f"{min(ratios):5.2f}-{max(ratios):4.2f} {mb(saved['bptt'] + state_bytes):>10} "
              f"{mb(saved['amrb'] + state_bytes):>10} "
              f"{(saved['bptt'] + state_bytes) / (saved['amrb'] + state_bytes):6.1f}", flush=True)
        amrb_peak[T] = (saved["amrb"], rss["amrb"])
    lo, hi = min(amrb_peak), max(amrb_peak)
    if hi > lo:
        print(f"AMRB's peak at T = {hi} / at T = {lo}: saved tensors {amrb_peak[hi][0] / amrb_peak[lo][0]:.2f}x, "
              f"RSS {amrb_peak[hi][1] / max(amrb_peak[lo][1], 1):.2f}x")
    print("\nWhere the time goes, ms per segment (medians of the rounds above; AMRB's no-grad pass covers "
          "T - 1 segments):")
    print(f"{'T':>3} {'BPTT fwd':>9} {'BPTT bwd':>9} {'no-grad':>8} {'AMRB fwd':>9} {'AMRB bwd':>9} {'other':>6} "
          f"{'no-grad / fwd':>13} {'1 + no-grad / BPTT':>18} {'GFLOP BPTT':>10} {'AMRB / BPTT in FLOPs':>20} "
          f"{'faults/step BPTT':>16} {'AMRB':>6}")
    for T, ph in phases.items():
        ms = {k: 1e3 * v / (T - 1 if k == "amrb nograd_s" else T) for k, v in ph.items() if k.endswith("_s")}
        bptt = ph["bptt forward_s"] + ph["bptt backward_s"]
        print(f"{T:>3} {ms['bptt forward_s']:9.2f} {ms['bptt backward_s']:9.2f} {ms['amrb nograd_s']:8.2f} "
              f"{ms['amrb forward_s']:9.2f} {ms['amrb backward_s']:9.2f} {ms['amrb other_s']:6.2f} "
              f"{ms['amrb nograd_s'] / ms['amrb forward_s']:13.2f} {1 + ph['amrb nograd_s'] / bptt:18.2f} "
              f"{flops[T, 'bptt'] / 1e9:10.2f} {flops[T, 'amrb'] / flops[T, 'bptt']:20.3f} "
              f"{ph['bptt faults']:16.0f} {ph['amrb faults']:6.0f}")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{os.cpu_count()} cores; load average {load} (1, 5, 15 min)")


if __name__ == "__main__":
    run_main(main)
