"""Training throughput (forward + backward, tokens/s): RMAAT vs RMT vs Transformer by length.

    PYTHONPATH=$PWD python bench/throughput.py [--lengths 1024 2048 4096 8192 16384] [--repeats 3]

Equal width and depth for every model (the ModelConfig defaults: d_model 64, 4 heads,
2 layers, d_ff 128), batch of one sequence of the given length, no padding. Each model is
trained the way the paper trains it: RMAAT with AMRB, RMT with BPTT (memory + softmax
attention within segments), Transformer with plain backprop (softmax over the whole
sequence; SDPA's fused CPU kernel). RMAAT with BPTT is listed too, to separate the
attention kernel from the training method. Median of ``--repeats`` interleaved steps after
one warm-up step; per-token cost in microseconds. A (model, length) whose previous length
took more than ``--cap`` seconds per step is skipped (quadratic growth). Nothing asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from rmaat_model.amrb import forward_backward
from rmaat_model.model import ModelConfig, build_model

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _schedule import retention_file  # noqa: E402

MODELS = {  # name -> (arch, retention, method)
    "RMAAT (AMRB)": ("rmaat", "ltp", "amrb"),
    "RMAAT (BPTT)": ("rmaat", "ltp", "bptt"),
    "RMT (BPTT)": ("rmt", "none", "bptt"),
    "RLT (AMRB)": ("rlt", "none", "amrb"),
    "Elastic (AMRB)": ("elastic", "none", "amrb"),
    "Transformer": ("transformer", "none", "bptt"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--segment-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cap", type=float, default=8.0, help="skip longer lengths once a step exceeds this (s)")
    ap.add_argument("--retention", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rfile, rdesc = retention_file(args.retention)
    max_len = max(args.lengths)
    models = {}
    for name, (arch, retention, method) in MODELS.items():
        cfg = ModelConfig(arch=arch, retention=retention, retention_file=rfile, max_len=max_len,
                          segment_len=args.segment_len, n_layers=args.layers)
        torch.manual_seed(0)
        models[name] = (build_model(cfg), method)
    cfg = next(iter(models.values()))[0].cfg
    print(f"d_model={cfg.d_model} heads={cfg.n_heads} layers={cfg.n_layers} d_ff={cfg.d_ff} "
          f"N={args.segment_len} M={cfg.n_mem}; batch {args.batch}; {args.threads} threads; "
          f"median of {args.repeats}; retention: {rdesc}")
    print(f"{'length':>7} " + " ".join(f"{n:>20}" for n in models) + f" {'RMAAT/RMT':>10}")
    skip: set[str] = set()
    for L in args.lengths:
        g = torch.Generator().manual_seed(L)
        x = torch.randint(1, cfg.vocab_size, (args.batch, L), generator=g)
        y = torch.randint(0, cfg.n_classes, (args.batch,), generator=g)
        walls: dict[str, list[float]] = {n: [] for n in models if n not in skip}
        for n in walls:                                     # warm-up
            model, method = models[n]
            forward_backward(model, x, y, method=method)
            model.zero_grad(set_to_none=True)
        for _ in range(args.repeats):
            for n in walls:
                model, method = models[n]
                t0 = time.perf_counter()
                forward_backward(model, x, y, method=method)
                walls[n].append(time.perf_counter() - t0)
                model.zero_grad(set_to_none=True)
        cells, tps = [], {}
        for n in models:
            if n not in walls:
                cells.append(f"{'skipped':>20}")
                continue
            w = statistics.median(walls[n])
            tps[n] = args.batch * L / w
            cells.append(f"{tps[n]:>9.0f} t/s {1e6 / tps[n]:>5.0f}us")
            if w > args.cap:
                skip.add(n)
        ratio = tps["RMAAT (AMRB)"] / tps["RMT (BPTT)"] if {"RMAAT (AMRB)", "RMT (BPTT)"} <= tps.keys() else float("nan")
        print(f"{L:>7} " + " ".join(cells) + f" {ratio:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
