"""Pool workers end with the process that started them (astro_rmaat.workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from astro_rmaat.workers import POLL_S, descendants
from process_probes import working_in

ROOT = Path(__file__).resolve().parents[2]

# A pool's owner: one spawned worker, which reports its pid, then runs a one-minute task: a sleep
# in the worker, or (argv[2] == "children") a shell whose two sleeps, a child of the worker and
# that child's own child, are what a sweep point's binary or a build's compiler are to a worker.
OWNER = r"""
import multiprocessing as mp, os, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor
from astro_rmaat.workers import exit_with_parent
kw = dict(initializer=exit_with_parent, initargs=(os.getpid(),)) if sys.argv[1] == "watched" else {}
with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"), **kw) as pool:
    print(pool.submit(os.getpid).result(), flush=True)
    if sys.argv[2] == "children":
        pool.submit(subprocess.run, ["sh", "-c", "sleep 60 & exec sleep 61"]).result()
    else:
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


def _orphans_after_owner_killed(mode: str, wait_s: float, task: str = "sleep") -> dict[int, bool]:
    """Start an owner, SIGKILL it once its worker runs the long task, and say which of the
    worker and the processes below it were gone within ``wait_s`` seconds: {pid: gone}, the
    worker first."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, mode, task], stdout=subprocess.PIPE, text=True,
                             env=ENV)
    try:
        worker = int(owner.stdout.readline())
        below: list[int] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:   # the worker is inside its task, and its processes started
            time.sleep(0.25)
            below = [p.pid for p in psutil.Process(worker).children(recursive=True)]
            if len(below) == (2 if task == "children" else 0):
                break
        else:
            raise AssertionError(f"the worker's task started {len(below)} processes")
        pids = [worker, *below]
        assert not any(map(_gone, pids))
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
        deadline = time.monotonic() + wait_s
        while not all(map(_gone, pids)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return {pid: _gone(pid) for pid in pids}
    finally:
        owner.kill()
        owner.stdout.close()


def _kill(pids, sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def test_a_worker_ends_when_its_pool_owner_is_killed_mid_task():
    """SIGKILL to the pool's owner alone: the watched worker ends within a few polls; an
    unwatched one (the behaviour without the initializer) is still running its task."""
    gone = _orphans_after_owner_killed("watched", wait_s=10 * POLL_S + 5)
    left = [pid for pid, g in gone.items() if not g]
    _kill(left)
    assert not left, f"worker {left} outlived its pool's owner"
    gone = _orphans_after_owner_killed("plain", wait_s=4 * POLL_S)
    try:
        assert not any(gone.values()), \
            "the control's worker ended by itself: the test would not see a missing initializer"
    finally:
        _kill(pid for pid, g in gone.items() if not g)


def test_the_processes_a_worker_started_end_with_it():
    """The worker's task runs a child process, which has a child of its own (a sweep point's
    binary, a build's compiler): when the owner is killed, both end with the worker. In the
    control, without the initializer, all three run on."""
    gone = _orphans_after_owner_killed("watched", wait_s=10 * POLL_S + 5, task="children")
    left = [pid for pid, g in gone.items() if not g]
    _kill(left)
    assert not left, f"still running after the owner was killed: {left}"
    gone = _orphans_after_owner_killed("plain", wait_s=4 * POLL_S, task="children")
    try:
        assert not any(gone.values()), "the control's processes ended by themselves"
    finally:
        _kill(pid for pid, g in gone.items() if not g)


def test_descendants_lists_children_and_grandchildren():
    """``descendants`` reads the process tree from /proc: it agrees with psutil's on a tree of
    three levels (a process, its child, the child's child) and on a leaf (nothing below it)."""
    tree = subprocess.Popen([sys.executable, "-c",
                             "import subprocess, sys; subprocess.run([sys.executable, '-c', "
                             "'import subprocess; subprocess.run([\"sleep\", \"30\"])'])"])
    try:
        deadline = time.monotonic() + 30
        while len(psutil.Process(tree.pid).children(recursive=True)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        below = psutil.Process(tree.pid).children(recursive=True)
        assert len(below) == 2 and below[1].ppid() == below[0].pid    # a child and a grandchild
        assert sorted(descendants(tree.pid)) == sorted(p.pid for p in below)
        assert descendants(below[1].pid) == []
    finally:
        try:
            _kill([tree.pid, *(p.pid for p in psutil.Process(tree.pid).children(recursive=True))])
        except psutil.NoSuchProcess:
            pass
        tree.wait()


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


# A process that starts ``sleep 60`` from a thread other than its main one (as a Dask worker runs
# a task), with die_with_parent's preexec_fn (argv[1] == "tied") or without, prints the sleep's
# pid and leaves by os._exit while it runs (as a Dask worker leaves when its cluster's owner dies).
STARTER = r"""
import os, subprocess, sys, threading, time
from astro_rmaat.workers import die_with_parent
def task():
    arm = die_with_parent() if sys.argv[1] == "tied" else None
    proc = subprocess.Popen(["sleep", "60"], preexec_fn=arm)
    print(proc.pid, flush=True)
    proc.wait()
threading.Thread(target=task, daemon=True).start()
time.sleep(float(sys.argv[2]))
os._exit(1)
"""


def _program_after_starter_exits(mode: str, wait_s: float) -> bool:
    """Whether the starter's ``sleep 60`` was gone within ``wait_s`` seconds of the starter's exit."""
    starter = subprocess.Popen([sys.executable, "-c", STARTER, mode, "2"], stdout=subprocess.PIPE, text=True,
                               env=ENV)
    program = int(starter.stdout.readline())
    assert not _gone(program)
    starter.wait(timeout=30)
    deadline = time.monotonic() + wait_s
    while not _gone(program) and time.monotonic() < deadline:
        time.sleep(0.05)
    gone = _gone(program)
    _kill([program])
    starter.stdout.close()
    return gone


def test_a_program_tied_by_die_with_parent_ends_when_its_starter_leaves_by_os_exit():
    """The thread that started the program ends with its process (os._exit: no handler, no watch
    runs): the tied program gets SIGKILL from the kernel; untied (the control) it runs on."""
    assert _program_after_starter_exits("tied", wait_s=5), "the tied program outlived its starter"
    assert not _program_after_starter_exits("plain", wait_s=1), \
        "the control's program ended by itself: the test would not see a missing preexec_fn"


# A build's process: it adopts its descendants' orphans, watches its parent (argv[1]) and, in its
# folder (argv[2]), waits in os.system on a shell that starts 500 processes as fast as it can (for
# a build, a parallel make's compilers). Its main thread leaves the interpreter as soon as that
# shell dies, as a build's does when make is killed (Brian2 raises).
BUILDER = r"""
import os, sys
from astro_rmaat.workers import adopt_orphans, exit_with_parent
adopt_orphans()
exit_with_parent(int(sys.argv[1]))
os.chdir(sys.argv[2])
os.system("for i in $(seq 500); do sleep 60 & done; wait")
"""




# A process that starts argv[1] (Python code) with its own pid and the rest of its argv, then sleeps:
# the owner that the tests below kill.
ASKER = ("import os, subprocess, sys, time; "
         "subprocess.Popen([sys.executable, '-c', sys.argv[1], str(os.getpid()), *sys.argv[2:]]); time.sleep(120)")


def _left_after_owner_killed(worker: str, folder: Path, args: list[str], started: int, wait_s: float,
                             during_end=None) -> list[str]:
    """An owner (``ASKER``) starts ``worker`` with ``folder`` and ``args``; once ``started``
    processes work in ``folder`` (``working_in``: the owner and the worker among them, whose
    command lines name it), the owner is SIGKILLed, and ``during_end(worker's pid)`` runs,
    where given. Returns the states of the processes still working in ``folder`` ``wait_s``
    seconds later at most; they are then killed."""
    asker = subprocess.Popen([sys.executable, "-c", ASKER, worker, str(folder), *args], env=ENV)
    try:
        deadline = time.monotonic() + 60
        while len(working_in(folder)) < started:
            assert asker.poll() is None and time.monotonic() < deadline, "the worker never started its processes"
            time.sleep(0.05)
        pid = psutil.Process(asker.pid).children()[0].pid
        asker.kill()
        asker.wait()
        if during_end is not None:
            during_end(pid)
        deadline = time.monotonic() + wait_s
        while working_in(folder) and time.monotonic() < deadline:
            time.sleep(0.1)
        return _states(folder)
    finally:
        asker.kill()
        asker.wait()
        deadline = time.monotonic() + 30   # a shell still running may start more meanwhile
        while (left := working_in(folder)) and time.monotonic() < deadline:
            _kill(left)
            time.sleep(0.1)


def _states(folder: Path) -> list[str]:
    out = []
    for pid in working_in(folder):
        try:
            out.append(psutil.Process(pid).status())
        except psutil.NoSuchProcess:
            pass
    return out


def test_a_growing_tree_ends_whole_although_the_main_thread_leaves_when_its_child_dies(tmp_path):
    """The owner of a build-like process is killed while the tree below it grows. The end stops
    the whole tree before it kills any of it, and kills the main thread's own child last.
    Nothing may be left a few seconds later. (The earlier end killed what each scan found: the
    shell died in the first round, the main thread left the interpreter and took the watch's
    thread with it half done, and 52-258 of the 500 went on as init's orphans in six of seven
    runs; with a main thread that stays after os.system, none.)"""
    left = _left_after_owner_killed(BUILDER, tmp_path, [], started=20, wait_s=10 * POLL_S + 5)
    assert not left, f"{len(left)} processes still in the tree's folder after its end: {sorted(set(left))}"


# A worker whose main thread, busy in Python (argv[3] seconds), then leaves the interpreter as a
# script does, while 20 processes it started run in its folder (argv[2]); it watches argv[1].
BUSY_WORKER = r"""
import os, subprocess, sys, time
from astro_rmaat.workers import exit_with_parent
exit_with_parent(int(sys.argv[1]))
os.chdir(sys.argv[2])
kids = [subprocess.Popen(["sleep", "60"]) for _ in range(20)]
t0 = time.monotonic()
while time.monotonic() - t0 < float(sys.argv[3]):
    pass
"""


def test_a_main_thread_that_leaves_during_the_end_leaves_nothing_stopped_or_running(tmp_path):
    """The owner is killed while the worker's main thread is busy in Python; the main thread
    then leaves the interpreter while the watch's end is under way (its /proc reads, each giving
    up the GIL to the busy thread, had made it slow). The end is finished at exit: none of the
    worker's processes is left, stopped or running. (Before, the end's first version left all
    20 stopped for good.)"""
    left = _left_after_owner_killed(BUSY_WORKER, tmp_path, ["3"], started=22, wait_s=10 * POLL_S + 10)
    assert not left, f"left after the end: {left}"


# A worker watching argv[1] with 100 shells of three sleeps each below it, in its folder (argv[2]).
WIDE_WORKER = r"""
import os, subprocess, sys, time
from astro_rmaat.workers import exit_with_parent
exit_with_parent(int(sys.argv[1]))
os.chdir(sys.argv[2])
kids = [subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & sleep 60 & wait"]) for _ in range(100)]
time.sleep(120)
"""


def test_a_signal_that_reaches_the_worker_during_its_end_does_not_cut_it_short(tmp_path):
    """SIGTERM to the worker as soon as its end has stopped a first process of its tree (its
    default action would end the worker there): the end ignores it and finishes, and none of
    the 400 processes is left, stopped or running. (Before, all 400 were left stopped in one of
    two runs; the other's end was done before the signal.)"""
    def sigterm_once_stopping(worker: int) -> None:
        deadline = time.monotonic() + 10 * POLL_S + 5
        while psutil.STATUS_STOPPED not in _states(tmp_path) and working_in(tmp_path):
            assert time.monotonic() < deadline, "the end never began"
            time.sleep(0.001)
        _kill([worker], signal.SIGTERM)

    left = _left_after_owner_killed(WIDE_WORKER, tmp_path, [], started=402, wait_s=15,
                                    during_end=sigterm_once_stopping)
    assert not left, f"{len(left)} left after the end: {sorted(set(left))}"
