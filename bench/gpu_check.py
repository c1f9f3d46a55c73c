"""GPU checks (run by bench/gpu_check.sh on a machine with CUDA; a few minutes).

    PYTHONPATH=$PWD python bench/gpu_check.py [--device cuda] [--quick]

1. AMRB gradients equal BPTT's with dropout on (the device's RNG state is replayed): the
   largest per-parameter difference relative to that parameter's largest gradient; exit
   status 1 when it exceeds 1e-4 (float32 round-off is about 1e-6).
2. Peak memory of one training step (``torch.cuda.max_memory_allocated``), AMRB vs BPTT,
   T = 16 segments of 512 tokens, batch 4 (CUDA only).
3. Training throughput RMAAT + AMRB vs RMT + BPTT at 8K tokens, N = 512, batch 4, in float32
   and under bfloat16 autocast (median of 5 interleaved steps after a warm-up round).
Prints one line per figure and the device's name. A benchmark, not a test.

``--device cpu --quick`` runs the same code on the CPU at a small size (4 segments of 64,
batch 2, 2 rounds), so the script itself is checked where no GPU is lent (the test suite
does this).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from astro_rmaat.cli_args import ArgumentParser, run_main
from rmaat_model.amrb import forward_backward
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig

GRAD_BOUND = 1e-4


def model_for(arch: str, max_len: int, N: int, device) -> torch.nn.Module:
    cfg = ModelConfig(arch=arch, retention="ltp" if arch == "rmaat" else "none", max_len=max_len,
                      segment_len=N, n_layers=2, dropout=0.1)
    torch.manual_seed(0)
    return build_model(cfg).to(device)


def grads(model, x, y, method):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(3)
    forward_backward(model, x, y, method=method)
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def main() -> int:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--quick", action="store_true", help="4 segments of 64 tokens, batch 2, 2 timed rounds")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (--device cpu checks the script on the CPU)", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    T, N, B, rounds = (4, 64, 2, 2) if args.quick else (16, 512, 4, 5)
    L = T * N
    print(f"device: {name}; torch {torch.__version__}; {T} segments of {N} tokens, batch {B}")
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, 32, (B, L), generator=g).to(dev)
    y = torch.randint(0, 10, (B,), generator=g).to(dev)
    model = model_for("rmaat", L, N, dev)
    gb, ga = grads(model, x, y, "bptt"), grads(model, x, y, "amrb")
    worst = max(float((gb[n] - ga[n]).abs().max() / gb[n].abs().max().clamp_min(1e-30)) for n in gb)
    print(f"1. AMRB vs BPTT gradients with dropout: worst relative difference {worst:.2e} "
          f"over {len(gb)} parameters (bound {GRAD_BOUND:g})")
    if cuda:
        peaks = {}
        for method in ("bptt", "amrb"):
            model.zero_grad(set_to_none=True)
            sync(); torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            forward_backward(model, x, y, method=method)
            sync()
            peaks[method] = torch.cuda.max_memory_allocated() - base
        print(f"2. peak memory of a step, T = {T}: BPTT {peaks['bptt'] / 2**20:.1f} MiB, AMRB "
              f"{peaks['amrb'] / 2**20:.1f} MiB, ratio {peaks['bptt'] / peaks['amrb']:.2f}x")
    else:
        print("2. peak memory: CUDA only (bench/amrb_memory.py measures the CPU)")
    models = {"rmaat": (model, "amrb"), "rmt": (model_for("rmt", L, N, dev), "bptt")}
    for dtype in (torch.float32, torch.bfloat16):
        walls = {k: [] for k in models}
        for rep in range(rounds + 1):
            for k, (m, method) in models.items():
                m.zero_grad(set_to_none=True)
                sync(); t0 = time.perf_counter()
                with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
                    forward_backward(m, x, y, method=method)
                sync()
                if rep:                                   # the first round warms up
                    walls[k].append(time.perf_counter() - t0)
        tps = {k: B * L / statistics.median(v) for k, v in walls.items()}
        print(f"3. {str(dtype).split('.')[-1]}: RMAAT+AMRB {tps['rmaat']:.0f} tokens/s, RMT+BPTT {tps['rmt']:.0f} "
              f"tokens/s, ratio {tps['rmaat'] / tps['rmt']:.2f}x")
    return 0 if worst <= GRAD_BOUND else 1


if __name__ == "__main__":
    run_main(main)
