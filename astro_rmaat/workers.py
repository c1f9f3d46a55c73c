"""Worker processes that end with the process that started them.

A process pool's worker blocks on its task queue only between tasks: if the process that
started the pool is killed (SIGKILL, or SIGTERM to that process alone, as ``pkill -f`` on its
command line sends it) while a task runs, the worker carries on to the end of that task, an
orphan. For a benchmark run or a sweep point that is minutes of a core, writing into a run
directory that a restarted command then finds locked (``astro_rmaat.runs.lock_run_dir``).
``exit_with_parent`` as the pool's initializer ends such a worker within a second instead;
what it was running is left as an interrupted run, which the next invocation resumes. The
processes the worker started (a sweep point's compiled Brian2 binary, a build's compiler) end
with it.

A program a worker runs with ``subprocess`` (a sweep point's Brian2 binary) can be tied to the
thread that started it instead (``die_with_parent``): the kernel kills it when that thread ends,
however it ends. That holds where the worker is ended by someone else before its own watch
runs: a Dask worker leaves with ``os._exit`` the moment its cluster's owner is gone.

Ctrl-C in a terminal reaches the whole process group, workers included, and needs none of this.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Callable

from astro_rmaat.errors import ConfigError

#: seconds between two looks at the parent
POLL_S = 0.5
#: worker processes per core this process may run on, at most, for any pool on this machine
#: (a sweep's, a data generator's, a training run's DataLoader): more only queue for the same
#: cores, and thousands of them would exhaust the process table and memory
WORKERS_PER_CORE = 4


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system says, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_local_workers(name: str, workers: int, what: str = "worker processes") -> None:
    """Refuse more local ``what`` than ``WORKERS_PER_CORE`` per usable core (ConfigError naming
    ``name``); before any is started."""
    cores = usable_cores()
    if workers > WORKERS_PER_CORE * cores:
        raise ConfigError(f"{name} = {workers}: more than {WORKERS_PER_CORE} {what} per core of the {cores} this "
                          f"process may run on; expected at most {WORKERS_PER_CORE * cores}")


def descendants(pid: int) -> list[int]:
    """The pids of ``pid``'s children, their children and so on, read from ``/proc`` (Linux;
    an empty list where there is none); each after its parent."""
    return [child for child, _, _ in _tree(pid)]


def _tree(pid: int) -> list[tuple[int, bytes, bytes]]:
    """``descendants`` as (pid, state letter, start time), each from one read of
    ``/proc/<pid>/stat``: the state ``R``, ``S``, ``T`` stopped, ``Z`` zombie ...; the start
    time, in clock ticks after boot, which with the pid names one process (a pid is reused
    after its process ends)."""
    children: dict[int, list[tuple[int, bytes, bytes]]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        fields = _stat(name)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append((int(name), fields[0], fields[19]))
    found, todo, seen = [], [pid], {pid}
    while todo:
        for child in children.get(todo.pop(), ()):
            if child[0] not in seen:   # a pid reused while /proc was read could close a loop
                seen.add(child[0])
                found.append(child)
                todo.append(child[0])
    return found


def _stat(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, ...; the start
    time is the 20th); None where the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:      # ended meanwhile
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
    fields = stat[stat.rindex(b")") + 1:].split() if b")" in stat else []
    return fields if len(fields) > 19 else None


#: scans of the process tree at the end, at most, in each of its two rounds; and the seconds it
#: waits, at most, for the processes it asked to stop to stop
END_SCANS = 50
STOP_WAIT_S = 2.0
#: /proc states of a process that has ended (zombie, dead), and of one that starts nothing more:
#: those, or stopped (by a signal, by a tracer)
ENDED = (b"Z", b"X")
STOPPED = (b"T", b"t", *ENDED)
#: signals whose default action ends a process or that a handler may take: ignored for the end
END_QUIET = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1",
                                                     "SIGUSR2", "SIGALRM", "SIGPIPE") if hasattr(signal, name))
#: set once an end has begun in this process; held by the end, never released (a second waits)
_ending = threading.Event()
_end_lock = threading.Lock()


def _end() -> None:
    """End this process and every process below it (SIGKILL: no cleanup, as ``os._exit``).

    First the tree is stopped (SIGSTOP), scan after scan, each once the processes it asked have
    stopped, until a scan finds no process it had not asked: a stopped process starts no other
    (a parallel make, a compiler driver), so the tree stops growing; and the main thread, if it
    waits on a child (``os.system`` running make, ``subprocess.run``), goes on waiting instead
    of leaving the interpreter, which would take this thread with it half done and hand the
    tree's processes to init. Then the tree is killed, each process before its parent and this
    process's own children last, scan after scan until none is left alive, and then every
    process it had stopped that has left the tree since (its parent ended first, and init took
    it); the killing also runs when the stopping fails. A process that had left the tree before
    the first scan (its own parent ended first, and this process does not adopt orphans:
    ``adopt_orphans``) is not found. This process ends whatever the scans meet.

    An end once begun is not cut short by a signal (Ctrl-C, SIGTERM, a closed pipe: ignored
    from its start), nor by a second end (the main thread's at exit, while this thread's runs):
    that one waits, and the first ends the process."""
    _ending.set()
    _end_lock.acquire()   # never released: os._exit below
    try:
        _quiet()
        sys.setswitchinterval(1e-6)   # each /proc read gives up the GIL: win it back at once from a busy main thread
        me, asked = os.getpid(), {}
        try:
            for _ in range(END_SCANS):
                new = [(pid, started) for pid, _, started in _tree(me) if pid not in asked]
                if not new:
                    break
                for pid, started in new:
                    asked[pid] = started
                    _signal(pid, signal.SIGSTOP)
                _wait_stopped([pid for pid, _ in new])   # one in fork stops after it: its child is in the next scan
        finally:
            for _ in range(END_SCANS):
                alive = [pid for pid, state, _ in _tree(me) if state not in ENDED]
                if not alive:
                    break
                for pid in reversed(alive):   # each after its parent in the list: children first
                    _signal(pid, signal.SIGKILL)
            # one stopped whose parent then ended is no longer below this process (init took it):
            # killed too, where its pid still names the process that was asked (its start time)
            for pid, started in asked.items():
                if _started(pid) == started:
                    _signal(pid, signal.SIGKILL)
    finally:
        os._exit(1)


def _quiet() -> None:
    """Ignore ``END_QUIET`` in the whole process, from whichever thread (libc's ``signal``:
    Python's ``signal.signal`` works on the main thread only)."""
    try:
        libc_signal = ctypes.CDLL(None, use_errno=True).signal
    except (OSError, AttributeError):      # not a Unix C library
        return
    libc_signal.argtypes, libc_signal.restype = [ctypes.c_int, ctypes.c_void_p], ctypes.c_void_p
    for sig in END_QUIET:
        libc_signal(int(sig), 1)   # SIG_IGN


def _wait_stopped(pids: list[int]) -> None:
    """Wait, ``STOP_WAIT_S`` at most, until each of ``pids`` is stopped, a zombie or gone."""
    deadline = time.monotonic() + STOP_WAIT_S
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if (fields := _stat(pid)) is not None and fields[0] not in STOPPED]
        if pids:
            time.sleep(0.001)


def _started(pid: int) -> bytes | None:
    """When ``pid`` started (``_tree``); None where it is gone."""
    fields = _stat(pid)
    return fields[19] if fields is not None else None


def _signal(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid``; nothing where it has ended meanwhile."""
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def exit_with_parent(parent: int) -> None:
    """Pool initializer (``initargs=(os.getpid(),)``): end this process when ``parent``, the
    process that started the pool, is gone. The pool must start its workers as that process's
    children (the ``fork`` or ``spawn`` start method; not ``forkserver``).

    A daemon thread watches this process's parent pid, which the kernel changes (to init or a
    subreaper) the moment the parent exits, zombie or not, and then ends the processes this one
    started, with their own children (``descendants``), and this process, with exit status 1
    (``os._exit``: no cleanup handlers; files written through ``astro_rmaat.runs`` are replaced
    atomically, and the OS drops the run directory's lock). A parent that died before this ran
    is caught at once: this process's parent is no longer ``parent``. A main thread that leaves
    while an end is under way, or after the parent is gone, runs the end itself, so that no
    process of the tree is left stopped, or running, by an end cut short: at the interpreter's
    exit (``atexit``), and as a ``multiprocessing`` process leaves, which a ``fork`` pool's
    worker does by ``os._exit`` (its exit finalizers). A process forked from this one later
    (not through exec) is not watched and runs neither."""
    import multiprocessing.util   # here, not at import: only a watched process needs it

    if os.getppid() != parent:
        _end()
    me = os.getpid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_S)
        _end()

    def at_exit() -> None:
        if os.getpid() == me and (_ending.is_set() or os.getppid() != parent):
            _end()

    atexit.register(at_exit)
    multiprocessing.util.Finalize(None, at_exit, exitpriority=100)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


#: prctl options (Linux): the signal a process gets when the thread that started it ends; its
#: current value; and whether this process adopts its descendants' orphans
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 2, 36


def _prctl():
    """libc's prctl, its arguments declared; None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def adopt_orphans() -> bool:
    """Make this process the one its descendants' orphans are handed to (Linux
    ``PR_SET_CHILD_SUBREAPER``), so that ``exit_with_parent``'s end still finds the processes a
    killed descendant had started (a parallel ``make``'s compilers, when ``make`` dies first)
    instead of losing them to init. For a short-lived process whose children are many and
    nested (a build); an orphan adopted is not reaped before this process ends. False where
    not available."""
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess``: the program started gets SIGKILL when the thread that
    started it ends, also when its process is killed or leaves by ``os._exit`` (Linux
    ``prctl(PR_SET_PDEATHSIG)``); None where that is not available, and the program then
    outlives a killed parent as before. Call it in the process that starts the program, per
    start. Between fork and exec the function only calls prctl through a libc handle looked up
    here, and checks that its parent is still the one that forked it (a parent that died in
    between would send no signal)."""
    prctl = _prctl()
    current = ctypes.c_int(0)
    if prctl is None or prctl(PR_GET_PDEATHSIG, ctypes.addressof(current), 0, 0, 0) != 0:
        return None      # prctl refused here (a sandbox): the program runs untied
    parent, sig = os.getpid(), int(signal.SIGKILL)

    def arm() -> None:
        if prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os._exit(1)
    return arm
