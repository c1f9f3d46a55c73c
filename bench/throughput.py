"""Training throughput (forward + backward): RMAAT + AMRB against RMT + BPTT, side by side.

    PYTHONPATH=$PWD python bench/throughput.py [--threads 1 2] [--repeats 5] [--compile]
        [--lengths 1024 2048 4096 8192 16384 32768] [--quick] [--layouts 8192:512:4 ...]

Equal width and depth for every model (the ModelConfig defaults: d_model 64, 4 heads,
2 layers, d_ff 128, M = 8 memory tokens, dropout 0.1), no padding. Each model is trained the
way the paper trains it: RMAAT with AMRB, RMT with BPTT; RMAAT with BPTT is listed too, to
separate the attention kernel from the training method, and "RMAAT+AMRB Python", the same
model with the Python block instead of the C++ one (rmaat_model.native; the same numbers), to
show what the C++ block gives; and at two threads and more "RMAAT+AMRB overlap", AMRB with its
replays on a second thread (``forward_backward(..., overlap=True)``, TrainConfig.amrb_overlap;
the intra-op threads split between the two). ``--compile`` adds RMAAT + AMRB and
RMT + BPTT with their block stacks through torch.compile (RMAAT.compile_blocks; the compile
time is reported, not counted).

First the operator calls of one step of each model (torch.profiler), then two tables for
each thread count:
  1. the paper's layouts: 8K tokens in segments of N = 512 at batch 4 (Retrieval) and 1, and
     N = 2048 at batch 1 -- steps/s of each model and the ratio to RMT + BPTT; every model's
     step is timed once per round, rounds interleaved, median of ``--repeats`` rounds after a
     warm-up step;
  2. RMAAT + AMRB's time per token from 1K to 32K tokens (N = 512, batch 1) and its spread
     (max / min - 1).
The machine's state is printed (cores, threads, load average). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

import torch

from astro_rmaat.cli_args import ArgumentParser, positive_int, run_main
from rmaat_model import native
from rmaat_model.amrb import forward_backward
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _schedule import retention_file  # noqa: E402

MODELS = {  # name -> (arch, retention, method, compiled, C++ block where it is built, overlapped replays)
    "RMAAT+AMRB": ("rmaat", "ltp", "amrb", False, True, False),
    "RMAAT+AMRB overlap": ("rmaat", "ltp", "amrb", False, True, True),   # at 2 threads and more
    "RMAAT+AMRB Python": ("rmaat", "ltp", "amrb", False, False, False),
    "RMAAT+BPTT": ("rmaat", "ltp", "bptt", False, True, False),
    "RMT+BPTT": ("rmt", "none", "bptt", False, True, False),
}
COMPILED = {   # compiled blocks run the Python block's operations (rmaat_model.native)
    "RMAAT+AMRB compiled": ("rmaat", "ltp", "amrb", True, False, False),
    "RMT+BPTT compiled": ("rmt", "none", "bptt", True, False, False),
}


def for_threads(specs: dict, threads: int) -> dict:
    """The models that run at ``threads``: overlapped replays need two threads or more."""
    return {n: spec for n, spec in specs.items() if threads >= 2 or not spec[5]}


LAYOUTS = [(8192, 512, 4), (8192, 512, 1), (8192, 2048, 1)]   # (tokens, N, batch)


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores; load average {load} (1, 5, 15 min)"


def build(spec, L, N, rfile):
    """(model, method, C++ block or not, overlapped replays or not) of a MODELS / COMPILED entry."""
    arch, retention, method, compiled, cpp, overlap = spec
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, retention=retention, retention_file=rfile, max_len=L,
                                    segment_len=N))
    return (model.compile_blocks() if compiled else model), method, cpp, overlap


def train_step(model, method, cpp, overlap, x, y) -> None:
    with contextlib.nullcontext() if cpp else native.disabled():
        forward_backward(model, x, y, method=method, overlap=overlap)


def timed_rounds(runs: dict, repeats: int) -> dict:
    """Median step wall (s) per run, ``runs``: key -> (model, method, cpp, overlap, x, y). A warm-up step
    each, then ``repeats`` rounds in which every run's step is timed once (interleaved)."""
    for model, *rest in runs.values():
        train_step(model, *rest)
        model.zero_grad(set_to_none=True)
    walls: dict = {key: [] for key in runs}
    for _ in range(repeats):
        for key, (model, *rest) in runs.items():
            t0 = time.perf_counter()
            train_step(model, *rest)
            walls[key].append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
    return {key: statistics.median(w) for key, w in walls.items()}


def layout_table(specs: dict, rfile: str, repeats: int, layouts) -> None:
    names = list(specs)
    print(f"{'tokens':>6} {'N':>5} {'B':>2} " + " ".join(f"{n:>20}" for n in names))
    for L, N, B in layouts:
        g = torch.Generator().manual_seed(L + B)
        x = torch.randint(1, 32, (B, L), generator=g)
        y = torch.randint(0, 10, (B,), generator=g)
        models = {}
        for n, spec in specs.items():
            t0 = time.perf_counter()
            models[n] = build(spec, L, N, rfile)
            if spec[3]:   # compile on the first call: not counted
                train_step(*models[n], x, y)
                print(f"  ({n}: compiled in {time.perf_counter() - t0:.0f} s)", flush=True)
        med = timed_rounds({n: (*models[n], x, y) for n in names}, repeats)
        ref = med["RMT+BPTT"]
        cells = [f"{1 / med[n]:7.2f}/s {ref / med[n]:5.2f}x" for n in names]
        print(f"{L:>6} {N:>5} {B:>2} " + " ".join(f"{c:>20}" for c in cells), flush=True)


def per_token_table(rfile: str, repeats: int, lengths) -> None:
    N, runs = 512, {}
    for L in lengths:   # the lengths are interleaved too
        g = torch.Generator().manual_seed(L)
        runs[L] = (*build(MODELS["RMAAT+AMRB"], L, N, rfile), torch.randint(1, 32, (1, L), generator=g),
                   torch.randint(0, 10, (1,), generator=g))
    walls = {L: w / L * 1e6 for L, w in timed_rounds(runs, repeats).items()}
    print("RMAAT+AMRB, N = 512, batch 1: " + ", ".join(f"{L}: {w:.1f} us/token" for L, w in walls.items()))
    print(f"  spread max/min - 1 = {max(walls.values()) / min(walls.values()) - 1:.1%}")


def op_count_table(specs: dict, rfile: str, L: int = 8192, N: int = 512, B: int = 1) -> None:
    """ATen operator calls (every dispatched ``aten::`` op, nested ones included) and all
    profiler events of one training step, counted with torch.profiler after a warm-up step."""
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(L)
    x, y = torch.randint(1, 32, (B, L), generator=g), torch.randint(0, 10, (B,), generator=g)
    counts = {}
    for n, spec in specs.items():
        model, *how = build(spec, L, N, rfile)
        train_step(model, *how, x, y)
        model.zero_grad(set_to_none=True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_step(model, *how, x, y)
        events = prof.events()
        counts[n] = (sum(e.name.startswith("aten::") for e in events), len(events))
    ref = counts["RMT+BPTT"][0]
    print(f"operator calls per step ({L} tokens, N = {N}, batch {B}): " + "; ".join(
        f"{n} {a} aten ({a / ref:.2f}x RMT+BPTT), {e} events" for n, (a, e) in counts.items()))


def main() -> None:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=positive_int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--lengths", type=positive_int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768])
    ap.add_argument("--compile", action="store_true", help="add the torch.compile variants")
    ap.add_argument("--quick", action="store_true", help="1 thread, 3 repeats, 2K tokens, lengths 1K-4K")
    ap.add_argument("--retention", default=None)
    ap.add_argument("--layouts", nargs="+", metavar="TOKENS:N:BATCH", default=None,
                    help="only these layouts (e.g. 8192:512:4), and no per-token table")
    args = ap.parse_args()
    layouts = LAYOUTS
    if args.layouts:
        layouts = []
        for spec in args.layouts:
            parts = spec.split(":")
            if len(parts) != 3 or not all(p.isdecimal() and int(p) > 0 for p in parts):
                ap.error(f"--layouts {spec}: expected TOKENS:N:BATCH, three positive integers")
            layouts.append(tuple(int(p) for p in parts))
    if args.quick:
        args.threads, args.repeats, args.lengths = [1], 3, [1024, 2048, 4096]
        layouts = [(2048, 512, 4), (2048, 512, 1)]
    rfile, rdesc = retention_file(args.retention)
    specs = {**MODELS, **(COMPILED if args.compile else {})}
    if args.compile:   # one compiled graph per model instance and shape: this bench builds many
        import torch._dynamo as dynamo   # (a plain `import torch._dynamo` would make torch local here)
        dynamo.config.recompile_limit = 256
        dynamo.config.accumulated_recompile_limit = 4096
    cfg = ModelConfig()
    print(f"d_model={cfg.d_model} heads={cfg.n_heads} layers={cfg.n_layers} d_ff={cfg.d_ff} M={cfg.n_mem} "
          f"dropout={cfg.dropout}; median of {args.repeats} interleaved rounds; retention: {rdesc}; "
          f"torch {torch.__version__}; {machine()}")
    print(f"block: {native.status()}; \"Python\": the same model with the Python block")
    torch.set_num_threads(1)
    op_count_table(for_threads(specs, 1), rfile, *((2048, 512, 1) if args.quick else (8192, 512, 1)))
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\n== {threads} thread{'s' if threads > 1 else ''}: steps/s and x RMT+BPTT")
        layout_table(for_threads(specs, threads), rfile, args.repeats, layouts)
        if not args.layouts:
            per_token_table(rfile, args.repeats, args.lengths)
    print(f"\n{machine()}")


if __name__ == "__main__":
    run_main(main)
