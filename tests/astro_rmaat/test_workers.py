"""Pool workers end with the process that started them (astro_rmaat.workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from astro_rmaat.workers import POLL_S

ROOT = Path(__file__).resolve().parents[2]

# A pool's owner: one spawned worker, which reports its pid, then runs a one-minute task.
OWNER = r"""
import multiprocessing as mp, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from astro_rmaat.workers import exit_with_parent
kw = dict(initializer=exit_with_parent, initargs=(os.getpid(),)) if sys.argv[1] == "watched" else {}
with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"), **kw) as pool:
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 60).result()
"""


ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _initialized(owner: str, then: str) -> tuple[int, str]:
    """A fresh process runs ``exit_with_parent(<owner>)`` (a Python expression), then ``then``:
    (exit status, stdout)."""
    code = f"import os, time; from astro_rmaat.workers import exit_with_parent; exit_with_parent({owner}); {then}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    return out.returncode, out.stdout


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for whoever adopted it to reap it."""
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True


def _orphan_after_owner_killed(mode: str, wait_s: float) -> tuple[int, bool]:
    """Start an owner, SIGKILL it once its worker runs the long task, and say whether the
    worker was gone within ``wait_s`` seconds: (worker pid, gone)."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, mode], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        worker = int(owner.stdout.readline())
        time.sleep(0.5)   # the worker is inside time.sleep(60)
        assert not _gone(worker)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
        deadline = time.monotonic() + wait_s
        while not _gone(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        return worker, _gone(worker)
    finally:
        owner.kill()
        owner.stdout.close()


def test_a_worker_ends_when_its_pool_owner_is_killed_mid_task():
    """SIGKILL to the pool's owner alone: the watched worker ends within a few polls; an
    unwatched one (the behaviour without the initializer) is still running its task."""
    worker, gone = _orphan_after_owner_killed("watched", wait_s=10 * POLL_S + 5)
    assert gone, f"worker {worker} outlived its pool's owner"
    worker, gone = _orphan_after_owner_killed("plain", wait_s=4 * POLL_S)
    try:
        assert not gone, "the control's worker ended by itself: the test would not see a missing initializer"
    finally:
        if not gone:
            os.kill(worker, signal.SIGKILL)


def test_a_worker_whose_owner_is_already_gone_ends_at_once():
    """The owner died before the initializer ran: the initializer ends the process (status 1)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert _initialized(str(dead.pid), "print('still here')") == (1, "")


def test_the_watch_keeps_a_worker_while_its_owner_lives():
    """With its parent, the pool's owner, alive (here: the test's process) the worker runs to
    the end."""
    assert _initialized("os.getppid()", f"time.sleep(3 * {POLL_S}); print('done')") == (0, "done\n")


def test_an_owner_that_is_not_the_parent_ends_the_worker_at_once():
    """The owner named is alive but not this process's parent (it died and its pid was reused,
    or it is a zombie not yet reaped, or the pool started the worker through a fork server):
    the initializer cannot watch it, and ends the process (status 1)."""
    assert _initialized("os.getpid()", "print('still here')") == (1, "")
