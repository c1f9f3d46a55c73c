"""HiPPO-LegS discretisations side by side, and the block update against a token loop.

    PYTHONPATH=$PWD python bench/hippo_discretisation.py [--n-coef 8] [--L 16 64 256 1024] [--threads 1]

Part 1 (deterministic, float64): the cubic 1 - 2x + 3x^2 - 4x^3 sampled at the L cell midpoints
of [0, 1] is written token by token (``hippo.legs_recurrence``) with each discretisation and
reconstructed on 201 points; prints the worst error, and L^2 x error (constant for a
second-order method). Then the sample-and-hold check: 40 random samples vs the same held for
3 tokens each, worst state difference.

Part 2 (timed, float32): one segment written by ``ElasticMemory.write`` (one batched product with
the cached block matrices) vs the same update as a Python loop over the segment's tokens with
precomputed per-token matrices; median of --repeats interleaved runs, ratio loop / block.
Benchmarks are not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from astro_rmaat.cli_args import ArgumentParser, positive_int, run_main
from astro_rmaat.resources import check_memory
from rmaat_model.elastic import ElasticMemory
from rmaat_model.hippo import DISCRETISATIONS, legs_recurrence, reconstruct, step_matrices

F64 = torch.float64


def cubic(x):
    return 1 - 2 * x + 3 * x ** 2 - 4 * x ** 3


def accuracy(n_coef: int, lengths: list[int]) -> None:
    x = torch.linspace(0, 1, 201, dtype=F64)
    print(f"worst reconstruction error of a cubic, n_coef = {n_coef} (L^2 x error in brackets)")
    print(f"{'method':>9} " + " ".join(f"{'L=' + str(L):>20}" for L in lengths))
    for method in DISCRETISATIONS:
        cells = []
        for L in lengths:
            mid = (torch.arange(L, dtype=F64) + 0.5) / L
            err = float((reconstruct(legs_recurrence(cubic(mid), n_coef, method), x) - cubic(x)).abs().max())
            cells.append(f"{err:9.2e} [{err * L * L:8.1f}]")
        print(f"{method:>9} " + " ".join(f"{c:>20}" for c in cells))
    f = torch.randn(2, 40, dtype=F64, generator=torch.Generator().manual_seed(2))
    print("sample-and-hold (40 samples vs each held 3 tokens), worst state difference:")
    held = f.repeat_interleave(3, dim=-1)
    diffs = {m: float((legs_recurrence(f, n_coef, m) - legs_recurrence(held, n_coef, m)).abs().max())
             for m in DISCRETISATIONS}
    print("          " + "  ".join(f"{m} {d:.1e}" for m, d in diffs.items()))


def speed(batch: int, N: int, d_mem: int, n_coef: int, repeats: int) -> None:
    mem = ElasticMemory(d_mem, d_mem, n_coef=n_coef, n_samples=8, segment_len=N, max_segments=4)
    t = 2
    M, Nv = zip(*(step_matrices(t * N + j + 1, n_coef) for j in range(N)))
    M = [m.float() for m in M]
    Nv = [v.float() for v in Nv]
    g = torch.Generator().manual_seed(0)
    c = torch.randn(batch, d_mem, n_coef, generator=g)
    h = torch.randn(batch, N, d_mem, generator=g)
    mask = torch.ones(batch, N, dtype=torch.bool)

    def block():
        return mem.write(c, h, t, mask)

    def loop():
        f = mem.write_proj(h)
        x = c
        for j in range(N):
            x = x @ M[j].T + f[:, j, :, None] * Nv[j]
        return x

    with torch.no_grad():
        diff = float((block() - loop()).abs().max())
        times = {"block": [], "loop": []}
        for _ in range(repeats):
            for name, fn in (("block", block), ("loop", loop)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    tb, tl = statistics.median(times["block"]), statistics.median(times["loop"])
    print(f"one segment write, B={batch} N={N} d_mem={d_mem} n_coef={n_coef} float32: block {tb * 1e3:.2f} ms, "
          f"token loop {tl * 1e3:.2f} ms, loop/block {tl / tb:.1f}x (states agree to {diff:.1e})")


def check_sizes(args) -> None:
    """Refuse, before any work, sizes whose float64 matrices cannot fit (lower bounds): part 1
    builds the (n_coef, n_coef) LegS matrix and a product of that size beside it; part 2 keeps
    one (speed_n_coef, speed_n_coef) step matrix per token of the segment, and its block
    matrices beside them."""
    check_memory(2 * args.n_coef ** 2 * 8, f"--n-coef {args.n_coef}: two {args.n_coef} x {args.n_coef} float64 "
                 "matrices", "a smaller --n-coef")
    k, N = args.speed_n_coef, args.segment_len
    check_memory((N + 4) * k * k * 8, f"--speed-n-coef {k}, --segment-len {N}: {N + 4} float64 matrices of "
                 f"{k} x {k}", "a smaller --speed-n-coef or --segment-len")


def main() -> None:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-coef", type=positive_int, default=8)
    ap.add_argument("--L", type=positive_int, nargs="+", default=[16, 64, 256, 1024])
    ap.add_argument("--batch", type=positive_int, default=8)
    ap.add_argument("--segment-len", type=positive_int, default=128)
    ap.add_argument("--d-mem", type=positive_int, default=64)
    ap.add_argument("--speed-n-coef", type=positive_int, default=32)
    ap.add_argument("--repeats", type=positive_int, default=20)
    ap.add_argument("--threads", type=positive_int, default=1)
    args = ap.parse_args()
    check_sizes(args)
    torch.set_num_threads(args.threads)
    accuracy(args.n_coef, args.L)
    speed(args.batch, args.segment_len, args.d_mem, args.speed_n_coef, args.repeats)


if __name__ == "__main__":
    run_main(main)
