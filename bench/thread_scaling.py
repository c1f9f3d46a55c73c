"""Can a second Python thread run AMRB's replays while the first backpropagates? Two threads
of the same work against one: the model's segment forward, and bare tensor ops.

    PYTHONPATH=$PWD python bench/thread_scaling.py [--repeats 5] [--passes 2] [--tokens 8192] [--batch 1]

AMRB replays segment t-1 from its stored memory and RNG state alone, so the replay does not
wait for segment t's backward, and on a machine with two cores a second thread could run it
meanwhile. That helps only if two Python threads running the model's step at once take about
the wall of one. This times, with one intra-op thread per Python thread:

  ``model``  ``--passes`` no-grad forwards over every segment of a ``--tokens`` sequence
             (RMAAT, N = 512, the ModelConfig defaults, batch ``--batch``: bench/throughput.py's
             layout), in inference mode;
  ``ops``    the same number of matrix products and elementwise passes of the shapes a
             block works on (520 x 64 by 64 x 192, a 4 x 16 x 520 exponential), no model code;

each once in one thread and once in each of two threads started together, interleaved
``--repeats`` times. Prints the median walls and the ratio two-thread wall / one-thread wall:
1.0 means the threads ran side by side, 2.0 that they took turns (each thread does the full
work, so two threads do twice of it). A benchmark: nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time

import torch

from astro_rmaat.cli_args import ArgumentParser, positive_int, run_main
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig


def model_job(tokens: int, batch: int, passes: int):
    """A function running ``passes`` no-grad forwards over every segment of one batch."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="rmaat", retention="none", max_len=tokens, segment_len=512))
    x = torch.randint(1, 32, (batch, tokens), generator=torch.Generator().manual_seed(1))
    plan = model.plan(x, None)

    def job() -> None:
        with torch.inference_mode():
            for _ in range(passes):
                state = model.initial_memory(plan)
                for t in range(plan.n_segments):
                    state = model.step(plan, t, state)
    return job


def ops_job(calls: int):
    """A function issuing ``calls`` products and exponential passes of a block's shapes."""
    a, w, v = torch.randn(520, 64), torch.randn(64, 192), torch.randn(4, 16, 520)

    def job() -> None:
        for _ in range(calls):
            a @ w
            torch.clamp_max(v, 0.0).mul_(1.4427).exp2_()
    return job


def timed(job, threads: int) -> float:
    """Wall seconds of ``job`` run once in each of ``threads`` threads started together."""
    def body() -> None:
        torch.set_num_threads(1)
        job()
    workers = [threading.Thread(target=body) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - t0


def main() -> int:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--passes", type=positive_int, default=2, help="forwards over the sequence per run")
    ap.add_argument("--tokens", type=positive_int, default=8192)
    ap.add_argument("--batch", type=positive_int, default=1)
    ap.add_argument("--calls", type=positive_int, default=2000, help="product + exponential pairs per run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    jobs = {"model": model_job(args.tokens, args.batch, args.passes), "ops": ops_job(args.calls)}
    for job in jobs.values():   # warm-up
        timed(job, 1)
    walls: dict = {(name, n): [] for name in jobs for n in (1, 2)}
    for i in range(args.repeats):
        order = [(name, n) for name in jobs for n in (1, 2)]
        for name, n in (order if i % 2 == 0 else order[::-1]):   # drift cancels
            walls[(name, n)].append(timed(jobs[name], n))
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; one intra-op thread per Python "
          f"thread; medians of {args.repeats} interleaved repeats; Python {sys.version.split()[0]}")
    print("| work | one thread s | two threads s (each the full work) | ratio |\n|---|---|---|---|")
    for name in jobs:
        one, two = (statistics.median(walls[(name, n)]) for n in (1, 2))
        what = (f"model: {args.passes} no-grad passes over {args.tokens} tokens, batch {args.batch}"
                if name == "model" else f"ops: {args.calls} products + exponentials")
        print(f"| {what} | {one:.3f} | {two:.3f} | {two / one:.2f} |")
    return 0


if __name__ == "__main__":
    run_main(main)
