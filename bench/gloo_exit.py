"""Whether a two-process gloo run aborts at interpreter exit, with the process group opened as
``rmaat_model.distributed.setup`` opens it and as it was opened before.

    PYTHONPATH=$PWD python bench/gloo_exit.py [--runs 20] [--busy 2] [--ops 20]

Each run launches ``torchrun --standalone --nproc-per-node 2`` on this file twice, once per way of
opening the group, interleaved. Every worker imports ``torch.distributed.nn.functional`` after the
group exists (as DDP's constructor does, through ``torch._dynamo``), makes ``--ops`` all-reduces
of tensors made in Python, closes the group, counts the gloo threads still running and exits.

- ``late``: the group opened by ``init_process_group`` alone, as ``setup`` did before. That
  module's functions take the default group as a default argument, so it keeps the group, and
  gloo's threads, past ``destroy_process_group``.
- ``setup``: ``rmaat_model.distributed.setup``, which imports that module before the group exists.

A gloo thread still running at exit that drops the last C++ reference to a collective's tensor
has to take the GIL to release the tensor's Python object. Python 3.11 ends a thread that asks for
the GIL while the interpreter finalizes by unwinding it, and the unwinding through a destructor,
which may not throw, ends the process: SIGABRT, "terminate called without an active exception".
Prints, for each way, the runs whose ``torchrun`` failed, those whose output shows that abort,
and the gloo threads left after the close, with the machine's cores and load. ``--busy`` spinning
processes beside the runs make the exit's race likelier, as a loaded test machine does.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from astro_rmaat.cli_args import ArgumentParser, count_int, positive_int, run_main
from astro_rmaat.workers import die_with_parent

ABORT = "terminate called without an active exception"
WAYS = ("late", "setup")


def gloo_threads() -> int:
    """This process's threads whose name says gloo (Linux's /proc)."""
    n = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as fh:
                n += "gloo" in fh.read()
        except OSError:   # a thread that ended while listed
            pass
    return n


def worker(way: str, ops: int) -> None:
    import torch
    import torch.distributed as dist

    from rmaat_model import distributed as D

    if way == "setup":
        env = D.setup("cpu")
    else:
        dist.init_process_group(backend="gloo")
    import torch.distributed.nn.functional  # noqa: F401  (after the group, as DDP's constructor)
    for _ in range(ops):
        t = torch.ones(1000)
        dist.all_reduce(t)
        del t
    if way == "setup":
        D.teardown(env)
    else:
        dist.destroy_process_group()
    print(f"gloo threads left: {gloo_threads()}", flush=True)


def launch(way: str, ops: int, env: dict[str, str]) -> tuple[int, str]:
    """Run torchrun on this file's worker: (its exit status, its output). A launch that runs past
    5 minutes is ended with its ranks (its own session) and counts as failed."""
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             __file__, "--worker", way, "--ops", str(ops)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return -1, out
    return proc.returncode, out


def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=positive_int, default=20, help="launches of each way (default 20)")
    ap.add_argument("--busy", type=count_int, default=2, help="spinning processes beside them (default 2)")
    ap.add_argument("--ops", type=count_int, default=20, help="all-reduces in each worker (default 20)")
    ap.add_argument("--worker", choices=WAYS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.ops)
        return 0
    if not Path("/proc/self/task").is_dir():
        ap.error("counts threads in Linux's /proc, which this system does not have")
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    tally = {way: {"failed": 0, "aborted": 0, "left": []} for way in WAYS}
    spinners: list[subprocess.Popen] = []
    try:
        for _ in range(args.busy):   # they end with this process however it ends (Linux's PDEATHSIG)
            spinners.append(subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=die_with_parent()))
        for _ in range(args.runs):
            for way in WAYS:
                code, out = launch(way, args.ops, env)
                tally[way]["failed"] += code != 0
                tally[way]["aborted"] += ABORT in out
                tally[way]["left"] += [int(line.rsplit(":", 1)[1]) for line in out.splitlines()
                                       if line.startswith("gloo threads left:")]
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    for way in WAYS:
        t = tally[way]
        print(f"{way:>5}: torchrun failed {t['failed']}/{args.runs}, aborted at exit {t['aborted']}/{args.runs}; "
              f"gloo threads left after the close: {sorted(set(t['left']))}")
    print(f"{args.runs} launches of each, interleaved, {args.ops} all-reduces in each worker, "
          f"{args.busy} spinning processes beside them; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    run_main(main)
