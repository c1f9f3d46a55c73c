"""GPU checks (run by bench/gpu_check.sh on a machine with CUDA; a few minutes).

    PYTHONPATH=$PWD python bench/gpu_check.py

1. AMRB gradients equal BPTT's on CUDA with dropout on (the CUDA RNG state is replayed):
   largest per-parameter difference relative to that parameter's largest gradient.
2. Peak memory of one training step (``torch.cuda.max_memory_allocated``), AMRB vs BPTT,
   T = 16 segments of 512 tokens, batch 4.
3. Training throughput RMAAT + AMRB vs RMT + BPTT at 8K tokens, N = 512, batch 4, in float32
   and bfloat16 autocast (median of 5 interleaved steps).
Prints one line per figure and the GPU's name. A benchmark, not a test.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from rmaat_model.amrb import forward_backward
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig


def model_for(arch: str, max_len: int, device) -> torch.nn.Module:
    cfg = ModelConfig(arch=arch, retention="ltp" if arch == "rmaat" else "none", max_len=max_len,
                      segment_len=512, n_layers=2, dropout=0.1)
    torch.manual_seed(0)
    return build_model(cfg).to(device)


def grads(model, x, y, method):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    torch.cuda.manual_seed_all(3)
    forward_backward(model, x, y, method=method)
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    L = 16 * 512
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, 32, (4, L), generator=g).to(dev)
    y = torch.randint(0, 10, (4,), generator=g).to(dev)
    model = model_for("rmaat", L, dev)
    gb, ga = grads(model, x, y, "bptt"), grads(model, x, y, "amrb")
    worst = max(float((gb[n] - ga[n]).abs().max() / gb[n].abs().max().clamp_min(1e-30)) for n in gb)
    print(f"1. AMRB vs BPTT gradients on CUDA with dropout: worst relative difference {worst:.2e} "
          f"over {len(gb)} parameters")
    peaks = {}
    for method in ("bptt", "amrb"):
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        forward_backward(model, x, y, method=method)
        torch.cuda.synchronize()
        peaks[method] = torch.cuda.max_memory_allocated() - base
    print(f"2. peak memory of a step, T = 16: BPTT {peaks['bptt'] / 2**20:.1f} MiB, AMRB "
          f"{peaks['amrb'] / 2**20:.1f} MiB, ratio {peaks['bptt'] / peaks['amrb']:.2f}x")
    models = {"rmaat": (model, "amrb"), "rmt": (model_for("rmt", L, dev), "bptt")}
    for dtype in (torch.float32, torch.bfloat16):
        walls = {k: [] for k in models}
        for rep in range(6):
            for k, (m, method) in models.items():
                m.zero_grad(set_to_none=True)
                torch.cuda.synchronize(); t0 = time.perf_counter()
                with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                    forward_backward(m, x, y, method=method)
                torch.cuda.synchronize()
                if rep:                                   # the first round warms up
                    walls[k].append(time.perf_counter() - t0)
        tps = {k: 4 * L / statistics.median(v) for k, v in walls.items()}
        print(f"3. {str(dtype).split('.')[-1]}: RMAAT+AMRB {tps['rmaat']:.0f} tokens/s, RMT+BPTT {tps['rmt']:.0f} "
              f"tokens/s, ratio {tps['rmaat'] / tps['rmt']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
