"""What a training step spends outside the model: AdamW's step and the batch shards' gradient sums,
torch's operators against the C++ extension's loops, on the demo's ListOps model.

    PYTHONPATH=$PWD python bench/optimizer_step.py [--repeats 400] [--threads 2] [--shards 2]

Times, in one process and interleaved call by call, ``torch.optim.AdamW.step`` against
``rmaat_model.optim.AdamW.step`` (the same gradients, every parameter; the two give the same
bits: tests/rmaat_model/test_native_optim.py), and ``shards._sum_grads`` over ``--shards``
replicas' gradients by the Python operators against the extension's ``sum_grads``. Prints the
median milliseconds of each, with the machine's cores and load.

Then, where Linux's /proc is there, the CPU time that the process's other threads spend per
AdamW step: ``--pause-steps`` steps of each optimiser with 5 ms after each, as the rest of a
training step would follow it. An OpenMP team that a step starts (ATen's sqrt calls MKL's vector
sqrt, which starts it whatever the size) spins for a while after the call, on a core that the
batch shards' threads (rmaat_model.shards) want; the extension's step runs on the calling thread
alone. A benchmark, not a test.
"""

from __future__ import annotations

import copy
import os
import statistics
import threading
import time

from astro_rmaat.cli_args import ArgumentParser, positive_int, run_main

#: the pipeline's ListOps model, as bench/train_step_speed.py times its step
DEMO = dict(arch="rmaat", vocab_size=18, n_classes=10, max_len=512, d_model=64, n_heads=4, n_layers=2, d_ff=128,
            dropout=0.1, segment_len=128, n_mem=8, retention="none")


def other_threads_cpu_s() -> float | None:
    """CPU seconds (user + system) so far of this process's threads other than the calling
    one, from Linux's /proc; None where there is none."""
    me, total = threading.get_native_id(), 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tids:
        if int(tid) == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:   # a thread that ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])   # utime, stime (man 5 proc), in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=positive_int, default=400, help="timed calls of each (default 400)")
    ap.add_argument("--threads", type=positive_int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--shards", type=positive_int, default=2, help="replicas whose gradients are summed (default 2)")
    ap.add_argument("--pause-steps", type=positive_int, default=200,
                    help="steps of each, 5 ms apart, for the other threads' CPU time (default 200)")
    args = ap.parse_args(argv)
    import torch

    from rmaat_model import native, optim, shards
    from rmaat_model.model import build_model
    from rmaat_model.model_config import ModelConfig

    torch.set_num_threads(args.threads)
    ext = native.extension()
    if ext is None:
        ap.error(f"the C++ extension is not loaded: {native.status()}")
    torch.manual_seed(0)
    model = build_model(ModelConfig(**DEMO))
    params = list(model.parameters())
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    opts = {"torch": torch.optim.AdamW(a.parameters(), lr=1e-3), "extension": optim.AdamW(b.parameters(), lr=1e-3)}
    g = torch.Generator().manual_seed(1)
    step_ms: dict[str, list[float]] = {k: [] for k in opts}
    for i in range(args.repeats + 5):
        grads = [torch.randn(p.shape, generator=g) for p in params]
        for m in (a, b):
            for p, x in zip(m.parameters(), grads):
                p.grad = x.clone()
        for name in (opts if i % 2 == 0 else list(opts)[::-1]):
            t0 = time.perf_counter()
            opts[name].step()
            if i >= 5:
                step_ms[name].append(1e3 * (time.perf_counter() - t0))

    busy_ms: dict[str, float] = {}
    for name, opt in opts.items():
        time.sleep(0.2)   # what the steps above left spinning is done
        before = other_threads_cpu_s()
        if before is None:
            break
        for _ in range(args.pause_steps):
            opt.step()
            time.sleep(0.005)
        busy_ms[name] = 1e3 * (other_threads_cpu_s() - before) / args.pause_steps

    reps = [[torch.nn.Parameter(p.detach().clone()) for p in params] for _ in range(args.shards)]
    weights = [1.0 / args.shards] * args.shards
    sum_ms: dict[str, list[float]] = {"operators": [], "extension": []}
    real = native.extension
    for i in range(args.repeats + 5):
        for name in (sum_ms if i % 2 == 0 else list(sum_ms)[::-1]):
            for rp in reps:
                for q in rp:
                    q.grad = torch.randn(q.shape, generator=g)
            model.zero_grad(set_to_none=True)
            native.extension = real if name == "extension" else (lambda: None)
            try:
                t0 = time.perf_counter()
                shards._sum_grads(params, reps, weights)
                dt = 1e3 * (time.perf_counter() - t0)
            finally:
                native.extension = real
            if i >= 5:
                sum_ms[name].append(dt)

    n = sum(p.numel() for p in params)
    print(f"demo ListOps model: {n} parameter values in {len(params)} tensors; {args.threads} thread(s), "
          f"{args.repeats} interleaved calls of each; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    st, se = statistics.median(step_ms["torch"]), statistics.median(step_ms["extension"])
    print(f"AdamW step, ms (median): torch.optim.AdamW {st:.3f}, rmaat_model.optim.AdamW {se:.3f} ({st / se:.1f}x)")
    if busy_ms:
        print(f"CPU time of the other threads per AdamW step, ms (5 ms between steps, {args.pause_steps} steps "
              f"each): torch.optim.AdamW {busy_ms['torch']:.2f}, rmaat_model.optim.AdamW {busy_ms['extension']:.2f}")
    so, sx = statistics.median(sum_ms["operators"]), statistics.median(sum_ms["extension"])
    print(f"gradient sums of {args.shards} shards, ms (median): operators {so:.3f}, extension {sx:.3f} "
          f"({so / sx:.1f}x)")
    return 0


if __name__ == "__main__":
    run_main(main)
