"""AMRB on ragged batches: reading each group's loss early (in the replay of its last segment)
against reading every loss at the end, on the two demo configs.

    PYTHONPATH=$PWD python bench/ragged_reads.py [--batches 40] [--threads 1] [--device cpu]

Reading the loss of the sequences that end in segment t during t's replay lets AMRB's no-grad
pass skip their last segment, and costs one more classifier forward and backward
(``rmaat_model.amrb``). ``amrb.EARLY_READ_MIN_MACS`` decides, per group, whether that pays.
This bench times ``forward_backward(method="amrb")`` three ways in one process, interleaved
batch by batch (the order rotates): every loss read at the end, the default threshold, and
every group read early. It prints the median ms per step, each way's ratio to reading at the
end, the matrix-product GFLOP of a step (``FlopCounterMode``), and the early reads per step.
Configs: the recall demo's model (d_model 32, 1 block, segments of 16, 2..16 segments, no
dropout) and the ListOps demo's (d_model 64, 2 blocks, segments of 128, 100..500 tokens,
dropout 0.1), batch 32, random tokens. A benchmark, not a test; rerun it on another device
to recalibrate the threshold there.
"""

from __future__ import annotations

import math
import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from astro_rmaat.cli_args import ArgumentParser, positive_int, run_main
from rmaat_model import amrb
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig

CONFIGS = {
    "recall": (dict(vocab_size=32, n_classes=10, max_len=256, d_model=32, n_heads=2, n_layers=1, d_ff=64,
                    dropout=0.0, segment_len=16, n_mem=4), 256, 17, 256),
    "listops": (dict(vocab_size=18, n_classes=10, max_len=512, d_model=64, n_heads=4, n_layers=2, d_ff=128,
                     dropout=0.1, segment_len=128, n_mem=8), 500, 100, 500),
}
WAYS = {"at the end": math.inf, "default": amrb.EARLY_READ_MIN_MACS, "every group early": 0.0}


def batches(cfg: dict, width: int, lo: int, hi: int, n: int, device: str):
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        lengths = torch.randint(lo, hi + 1, (32,), generator=g)
        x = torch.randint(1, cfg["vocab_size"], (32, width), generator=g)
        x[torch.arange(width)[None, :] >= lengths[:, None]] = 0
        yield x.to(device), torch.randint(0, cfg["n_classes"], (32,), generator=g).to(device)


def early_reads_per_step(model, data) -> float:
    counts = [sum(amrb._early_reads(model, model.plan(x), "amrb", torch.nn.functional.cross_entropy) or [])
              for x, _ in data]
    return statistics.mean(counts)


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=positive_int, default=40, help="timed batches per config (each run every way)")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = ap.parse_args()
    if args.batches < 1 or args.threads < 1:
        ap.error(f"--batches {args.batches} / --threads {args.threads}: expected integers >= 1")
    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"{os.cpu_count()} cores, {args.threads} thread(s), device {args.device}, load average "
          f"{os.getloadavg()[0]:.2f}; {args.batches} batches of 32 per config, medians")
    for name in args.configs:
        kw, width, lo, hi = CONFIGS[name]
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch="rmaat", retention="none", **kw)).to(args.device)
        data = list(batches(kw, width, lo, hi, args.batches + 2, args.device))
        times: dict[str, list[float]] = {w: [] for w in WAYS}
        flops: dict[str, float] = {}
        reads: dict[str, float] = {}
        ways = list(WAYS)
        for k, (x, y) in enumerate(data):
            for w in ways[k % 3:] + ways[:k % 3]:
                amrb.EARLY_READ_MIN_MACS = WAYS[w]
                sync()
                t0 = time.perf_counter()
                amrb.forward_backward(model, x, y, method="amrb")
                sync()
                if k >= 2:   # two warm-up batches
                    times[w].append(time.perf_counter() - t0)
                model.zero_grad(set_to_none=True)
        for w, threshold in WAYS.items():
            amrb.EARLY_READ_MIN_MACS = threshold
            reads[w] = early_reads_per_step(model, data[2:])
            with FlopCounterMode(display=False) as counter:
                for x, y in data[2:12]:
                    amrb.forward_backward(model, x, y, method="amrb")
                    model.zero_grad(set_to_none=True)
            flops[w] = counter.get_total_flops() / min(10, len(data) - 2) / 1e9
        amrb.EARLY_READ_MIN_MACS = WAYS["default"]
        end = statistics.median(times["at the end"])
        print(f"\n{name}: d_model {kw['d_model']}, {kw['n_layers']} block(s), segments of {kw['segment_len']}, "
              f"{lo}..{hi} tokens")
        print(f"{'loss read':>20s} {'ms/step':>9s} {'x at end':>9s} {'GFLOP':>7s} {'early reads':>12s}")
        for w in WAYS:
            med = statistics.median(times[w])
            print(f"{w:>20s} {med * 1e3:9.2f} {end / med:9.3f} {flops[w]:7.3f} {reads[w]:12.2f}")


if __name__ == "__main__":
    run_main(main)
