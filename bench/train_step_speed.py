"""Training steps per second of the demo's ListOps model: this tree against an older revision.

    PYTHONPATH=$PWD python bench/train_step_speed.py [--ref c18666a] [--repeats 5] [--threads 1] [--profile] [--malloc]
                                                     [--norm pre|post] [--ablate] [--python] [--aten-products]
                                                     [--overlap]
                                                     [--shards N [--ref-shards]]

The config is the pipeline's ListOps model (d_model 64, 4 heads, 2 blocks, d_ff 128, dropout
0.1, segments of 128 with 8 memory tokens, batch 32, AMRB, AdamW), on seeded random batches
with the demo's lengths (100..500 tokens, ListOps vocabulary size); each tree's own AdamW class
(``rmaat_model.optim.AdamW`` where the tree has it, else torch's). ``--ref`` is checked out
with ``git worktree`` into a temporary folder; each repeat runs both trees in fresh
processes, interleaved (ref, this, ref, this, ...), each timing ``--steps`` optimiser steps
after two warm-up steps. Prints the median steps/s of each and their ratio, with the
machine's cores and load. Each tree runs with its own defaults (the old revision: pre-LN,
literal RF; ``--norm`` sets the block layout of both where the revision has the option, a
revision without it having pre-LN blocks only), and with ``--threads 0`` (the default) with the intra-op thread count its own
``train`` would use (the old revision: torch's default, one per core).

``--malloc`` also times this tree, in the same rounds, with glibc's mmap and trim thresholds as
the ``rmaat`` command sets them (``rmaat_model.allocator``); the reference and the plain
figures of this tree keep glibc's defaults. Each run also counts its page faults per step.

``--python`` also times this tree, in the same rounds, with the Python block instead of the C++
one (``RMAAT_NATIVE=0``; rmaat_model.native): the same numbers, the interpreter between the
block's operators. The plain figures of this tree use the C++ block where it builds.

``--aten-products`` also times this tree, in the same rounds, with the C++ block's checked
loops switched off (the extension's ``checked_products(False)``): the attention's products per
head, and the input projection's and the FFN's biases, by ATen's bmm, baddbmm and addmm and the
operators after them, as before those loops (the output projection's bias stays in the loop of
the dropout mask and the residual); the same numbers. With ``--malloc`` it runs with the
thresholds, and is compared with this tree's figures under them.

``--overlap`` also times this tree, in the same rounds, with AMRB's replays on a second thread
(``forward_backward(..., overlap=True)``; needs ``--threads`` 2 or more, split between the two).

``--shards N`` also times this tree, in the same rounds, with each batch's rows in N shards, each
through ``forward_backward`` on its own thread (``forward_backward(..., shards=N)``,
rmaat_model.shards; as many at once as ``--threads`` allows, each with an equal part of them).
Its numbers are not the unsharded step's (each shard draws its own dropout masks), its cost is.
Its line gives the ratio of the medians and, below it, the median and range of the repeats' own
ratios (each repeat's sharded run against its reference run).

``--ref-shards`` times the reference in the same shards too (and with ``--malloc``'s thresholds
where given): for two revisions that both have them, their sharded steps side by side.

``--ablate`` also times this tree, in the same rounds, without dropout, with BPTT instead of
AMRB, and with both: what the replay and the dropout draws cost a step, beside the step time
the 3x goal asks for (a third of the reference's).

``--profile`` then runs ``--steps`` steps of each tree under ``torch.profiler`` and prints how
much of a step the matrix products (mm, bmm, addmm, baddbmm) take, their GFLOP per step and
rate, and the speed-up over the reference that this tree's arithmetic would allow if
everything else took no time (the C++ block's loop for the heads' products makes no ATen call:
its products count in the rest); and the rate of a 1024^3 product at the same thread count, the
BLAS's rate when shapes do not hold it back. A benchmark, not a test.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from astro_rmaat.cli_args import ArgumentParser, count_int, positive_int, run_main

#: (method, dropout) of the demo's step, which both trees time; and ``--ablate``'s other variants of it
DEMO = ("amrb", 0.1)
ABLATIONS = (("amrb", 0.0), ("bptt", 0.1), ("bptt", 0.0))

CHILD = r"""
import dataclasses, json, sys, time
if sys.argv[5] == "tuned":   # glibc's thresholds as ``rmaat`` sets them (this tree only)
    from rmaat_model.allocator import tune_malloc
    if not tune_malloc():
        sys.exit("tune_malloc: not a glibc system")
import torch
threads = int(sys.argv[1])
if threads == 0:   # each tree's own training default
    try:
        from rmaat_model.train_config import TrainConfig
    except ImportError:   # older layout
        from rmaat_model.train import TrainConfig
    if "threads" in {f.name for f in dataclasses.fields(TrainConfig)}:
        torch.set_num_threads(TrainConfig().threads or 1)   # train: TrainConfig.threads, None = 1
    # else a revision without a thread policy: torch's default, one per core
else:
    torch.set_num_threads(threads)
from rmaat_model.model import ModelConfig, build_model
from rmaat_model.amrb import forward_backward
if sys.argv[10] == "aten":   # this tree only: every product by ATen (the checked loops off)
    from rmaat_model import native
    native.extension().checked_products(False)
steps, arch, norm = int(sys.argv[2]), sys.argv[3], sys.argv[6]
method, dropout = sys.argv[7], float(sys.argv[8])   # DEMO, or one of ABLATIONS
options = ({"overlap": True} if sys.argv[9] == "overlap"         # this tree only
           else {"shards": int(sys.argv[9][6:]), "shard_threads": threads or None}   # --threads in all
           if sys.argv[9].startswith("shards") else {})
layout = {}
if norm != "default":
    if "norm" in {f.name for f in dataclasses.fields(ModelConfig)}:
        layout["norm"] = norm
    elif norm != "pre":
        sys.exit(f"--norm {norm}: this revision has pre-LN blocks only")
cfg = ModelConfig(arch=arch, vocab_size=18, n_classes=10, max_len=512, d_model=64, n_heads=4, n_layers=2,
                  d_ff=128, dropout=dropout, segment_len=128, n_mem=8, retention="none", **layout)
torch.manual_seed(0)
model = build_model(cfg)
try:   # the tree's own AdamW, as its training makes it (this tree: rmaat_model.optim.AdamW)
    from rmaat_model.optim import AdamW
except ImportError:   # a revision without one: torch's
    AdamW = torch.optim.AdamW
opt = AdamW(model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(1)
def batch():
    lengths = torch.randint(100, 501, (32,), generator=g)
    x = torch.randint(1, 18, (32, 500), generator=g)
    x[torch.arange(500)[None, :] >= lengths[:, None]] = 0
    return x, torch.randint(0, 10, (32,), generator=g)
def step():
    x, y = batch()
    forward_backward(model, x, y, method=method, **options)
    opt.step(); opt.zero_grad(set_to_none=True)
step(); step()
if len(sys.argv) > 4 and sys.argv[4] == "profile":   # where a step's time goes (torch.profiler)
    from torch.profiler import ProfilerActivity, profile
    MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for _ in range(steps):
            step()
    ev = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    mm = [e for e in ev if e.key in MATMULS]
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)   # the BLAS's rate on a large product
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(20):
        a @ b
    peak = 20 * 2 * 1024 ** 3 / (time.perf_counter() - t0) / 1e9
    print(json.dumps({"matmul_ms": sum(e.self_cpu_time_total for e in mm) / steps / 1e3,
                      "matmul_gflop": sum(e.flops for e in mm) / steps / 1e9,
                      "op_calls": sum(e.count for e in ev) / steps,    # nested aten:: calls included
                      "peak_gflops": peak}))
    sys.exit(0)
import resource
f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
for _ in range(steps):
    step()
t1, f1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"steps_per_s": steps / (t1 - t0), "faults_per_step": (f1 - f0) / steps}))
"""


def child(tree: Path, threads: int, steps: int, arch: str, mode: str = "time", malloc: str = "default",
          norm: str = "default", variant: tuple[str, float] = DEMO, native: str = "auto",
          replays: str = "serial", products: str = "checked") -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.pop("RMAAT_NATIVE", None)
    if native != "auto":
        env["RMAAT_NATIVE"] = native
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    method, dropout = variant
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(steps), arch, mode, malloc, norm,
                          method, repr(dropout), replays, products], cwd=tree, env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(tree: Path, threads: int, steps: int, arch: str, malloc: str = "default",
        norm: str = "default", variant: tuple[str, float] = DEMO, native: str = "auto",
        replays: str = "serial", products: str = "checked") -> tuple[float, float]:
    """(steps/s, page faults per step)."""
    r = child(tree, threads, steps, arch, malloc=malloc, norm=norm, variant=variant, native=native,
              replays=replays, products=products)
    return r["steps_per_s"], r["faults_per_step"]


def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default="c18666a", help="revision to compare with (default: before this round)")
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--steps", type=positive_int, default=8)
    ap.add_argument("--threads", type=count_int, default=0,
                    help="intra-op threads for both trees; 0 (default): each tree's own training default")
    ap.add_argument("--arch", default="rmaat", help="rmaat | rmt | rlt (same config otherwise)")
    ap.add_argument("--norm", choices=("pre", "post"), default=None,
                    help="block layout of both trees (default: each tree's own)")
    ap.add_argument("--profile", action="store_true",
                    help="then profile --steps steps of each tree: matrix products against the rest")
    ap.add_argument("--malloc", action="store_true",
                    help="also time this tree with glibc's thresholds as `rmaat` sets them (rmaat_model.allocator)")
    ap.add_argument("--python", action="store_true",
                    help="also time this tree with the Python block (RMAAT_NATIVE=0) instead of the C++ one")
    ap.add_argument("--aten-products", action="store_true",
                    help="also time this tree with the C++ block's checked product loops switched off (ATen's)")
    ap.add_argument("--overlap", action="store_true",
                    help="also time this tree with AMRB's replays on a second thread (needs --threads >= 2)")
    ap.add_argument("--shards", type=positive_int, default=None,
                    help="also time this tree with each batch in this many row shards on their own threads")
    ap.add_argument("--ref-shards", action="store_true",
                    help="time the reference in --shards shards too, with --malloc's thresholds where given "
                         "(a revision that has both): two revisions' sharded steps side by side")
    ap.add_argument("--ablate", action="store_true",
                    help="also time this tree without dropout, with BPTT, and with both (what each costs a step)")
    args = ap.parse_args(argv)
    norm = args.norm or "default"
    if args.ref_shards and not args.shards:
        ap.error("--ref-shards: needs --shards N (the shard count both trees use)")
    if args.overlap and args.threads < 2:
        ap.error(f"--overlap: needs --threads 2 or more (the replays' thread and the backward's); got {args.threads}")
    here = Path(__file__).resolve().parents[1]
    if subprocess.run(["git", "-C", str(here), "rev-parse", "--verify", "--quiet", f"{args.ref}^{{commit}}"],
                      capture_output=True).returncode != 0:
        ap.error(f"--ref {args.ref}: not a commit of this repository")
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "ref"
        subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", "-q", str(ref), args.ref], check=True)
        try:
            old, new, tuned, python, aten, overlapped, sharded, faults = [], [], [], [], [], [], [], {}
            ablated = {v: [] for v in ABLATIONS} if args.ablate else {}
            sharding = ("tuned" if args.malloc else "default", f"shards{args.shards}")   # (malloc, replays)
            ref_malloc, ref_replays = sharding if args.ref_shards else ("default", "serial")
            for i in range(args.repeats):
                runs = [("ref", ref, ref_malloc, old, DEMO, "auto", ref_replays),
                        ("this", here, "default", new, DEMO, "auto", "serial")]
                if args.malloc:
                    runs.append(("tuned", here, "tuned", tuned, DEMO, "auto", "serial"))
                if args.python:
                    runs.append(("python", here, "default", python, DEMO, "0", "serial"))
                if args.aten_products:
                    runs.append(("aten", here, sharding[0], aten, DEMO, "auto", "serial"))
                if args.overlap:
                    runs.append(("overlap", here, "default", overlapped, DEMO, "auto", "overlap"))
                if args.shards:
                    runs.append(("shards", here, sharding[0], sharded, DEMO, "auto", sharding[1]))
                runs += [(v, here, "default", ablated[v], v, "auto", "serial") for v in ablated]
                for name, tree, malloc, into, variant, native, replays in (runs if i % 2 == 0 else runs[::-1]):
                    # interleaved, the order reversed every other repeat: drift cancels
                    sps, pf = run(tree, args.threads, args.steps, args.arch, malloc, norm, variant, native,
                                  replays, "aten" if name == "aten" else "checked")
                    into.append(sps)
                    faults.setdefault(name, []).append(pf)
                print(f"  repeat {i + 1}: {args.ref} {old[-1]:.2f} steps/s, this tree {new[-1]:.2f} steps/s"
                      + (f", with rmaat's malloc thresholds {tuned[-1]:.2f}" if tuned else "")
                      + (f", with the Python block {python[-1]:.2f}" if python else "")
                      + (f", with ATen's products {aten[-1]:.2f}" if aten else "")
                      + (f", with overlapped replays {overlapped[-1]:.2f}" if overlapped else "")
                      + (f", in {args.shards} shards {sharded[-1]:.2f}" if sharded else ""), flush=True)
            prof = {name: child(tree, args.threads, args.steps, args.arch, "profile", norm=norm)
                    for name, tree in ((args.ref, ref), ("this tree", here))} if args.profile else {}
        finally:
            subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(ref)], check=False)
    mo, mn = statistics.median(old), statistics.median(new)
    layout = f", {norm}-LN blocks" if args.norm else ""
    ref_way = (f"; {args.ref} in {args.shards} batch shards{' with the malloc thresholds' if args.malloc else ''}"
               if args.ref_shards else "")
    print(f"{args.arch} + AMRB, demo ListOps config{layout}, {args.threads or 'each tree own default'} thread(s), "
          f"{args.repeats} interleaved repeats of {args.steps} steps{ref_way}; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"median steps/s: {args.ref} {mo:.2f}, this tree {mn:.2f}; ratio {mn / mo:.2f}x "
          f"(page faults per step, median: {statistics.median(faults['ref']):.0f} and "
          f"{statistics.median(faults['this']):.0f})")
    if tuned:   # glibc's defaults in both columns above; here this tree as the `rmaat` command runs it
        mt = statistics.median(tuned)
        pairs = statistics.median(t / n for t, n in zip(tuned, new))
        print(f"this tree with rmaat's malloc thresholds (rmaat_model.allocator.tune_malloc): {mt:.2f} steps/s, "
              f"{mt / mo:.2f}x {args.ref}; {pairs:.2f}x glibc's defaults (median of the repeats' pairs); "
              f"{statistics.median(faults['tuned']):.0f} page faults per step")
    if python:
        mp = statistics.median(python)
        print(f"this tree with the Python block (RMAAT_NATIVE=0): {mp:.2f} steps/s, {mp / mo:.2f}x {args.ref}; "
              f"the C++ block {mn / mp:.2f}x it")
    if aten:
        ma = statistics.median(aten)
        base, label = (tuned, " with the same thresholds") if tuned else (new, "")
        pairs = statistics.median(n / a for n, a in zip(base, aten))
        print(f"this tree with ATen's products (the checked loops off){label}: {ma:.2f} steps/s, {ma / mo:.2f}x "
              f"{args.ref}; the loops {statistics.median(base) / ma:.2f}x it ({pairs:.2f}x, median of the repeats' "
              "pairs)")
    if overlapped:
        mv = statistics.median(overlapped)
        print(f"this tree with overlapped replays: {mv:.2f} steps/s, {mv / mo:.2f}x {args.ref}; "
              f"{mv / mn:.2f}x the serial replays")
    if sharded:
        ms = statistics.median(sharded)
        base, label = (statistics.median(tuned), "with the same thresholds") if tuned else (mn, "")
        print(f"this tree in {args.shards} batch shards{' with the malloc thresholds' if tuned else ''}: "
              f"{ms:.2f} steps/s, {ms / mo:.2f}x {args.ref}; {ms / base:.2f}x one shard{' ' + label if label else ''}; "
              f"{statistics.median(faults['shards']):.0f} page faults per step")
        ratios = [a / b for a, b in zip(sharded, old)]
        print(f"the repeats' own ratios, this tree's shards against {args.ref}: median "
              f"{statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x")
    if ablated:   # this tree, glibc's defaults, each variant's median step
        print(f"this tree's step, ms (median): AMRB with dropout {1e3 / mn:.1f}; "
              + "; ".join(f"{m.upper()} {'without dropout' if p == 0 else 'with dropout'} "
                          f"{1e3 / statistics.median(ablated[(m, p)]):.1f}" for m, p in ABLATIONS)
              + f"; 3x {args.ref} asks for {1e3 / mo / 3:.1f}")
    if prof:
        print(f"Where a step goes: median step time above; matrix products (mm, bmm, addmm, baddbmm) "
              f"from torch.profiler over {args.steps} steps of each")
        print(f"  {'tree':>10} {'step ms':>8} {'products ms':>12} {'rest ms':>8} {'GFLOP':>6} {'GFLOP/s':>8} "
              f"{'aten calls':>10}")
        for name, p, sps in ((args.ref, prof[args.ref], mo), ("this tree", prof["this tree"], mn)):
            print(f"  {name:>10} {1e3 / sps:8.1f} {p['matmul_ms']:12.1f} {1e3 / sps - p['matmul_ms']:8.1f} "
                  f"{p['matmul_gflop']:6.2f} {p['matmul_gflop'] / p['matmul_ms'] * 1e3:8.1f} {p['op_calls']:10.0f}")
        # what this tree could reach over the reference if everything but its matrix products took no time
        print(f"ceiling at this tree's arithmetic: {1e3 / mo:.1f} ms / {prof['this tree']['matmul_ms']:.1f} ms "
              f"= {1e3 / mo / prof['this tree']['matmul_ms']:.2f}x")
        p = prof["this tree"]
        print(f"a 1024^3 product runs at {p['peak_gflops']:.1f} GFLOP/s here: at that rate this tree's "
              f"{p['matmul_gflop']:.2f} GFLOP per step would take {p['matmul_gflop'] / p['peak_gflops'] * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    run_main(main)
