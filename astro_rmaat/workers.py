"""Worker processes that end with the process that started them.

A process pool's worker blocks on its task queue only between tasks: if the process that
started the pool is killed (SIGKILL, or SIGTERM to that process alone, as ``pkill -f`` on its
command line sends it) while a task runs, the worker carries on to the end of that task, an
orphan. For a benchmark run or a sweep point that is minutes of a core, writing into a run
directory that a restarted command then finds locked (``astro_rmaat.runs.lock_run_dir``).
``exit_with_parent`` as the pool's initializer ends such a worker within a second instead;
what it was running is left as an interrupted run, which the next invocation resumes.

Ctrl-C in a terminal reaches the whole process group, workers included, and needs none of this.
"""

from __future__ import annotations

import os
import threading
import time

#: seconds between two looks at the parent
POLL_S = 0.5


def exit_with_parent(parent: int) -> None:
    """Pool initializer (``initargs=(os.getpid(),)``): end this process when ``parent``, the
    process that started the pool, is gone. The pool must start its workers as that process's
    children (the ``fork`` or ``spawn`` start method; not ``forkserver``).

    A daemon thread watches this process's parent pid, which the kernel changes (to init or a
    subreaper) the moment the parent exits, zombie or not, and then ends the process with exit
    status 1 (``os._exit``: no cleanup handlers; files written through ``astro_rmaat.runs`` are
    replaced atomically, and the OS drops the run directory's lock). A parent that died before
    this ran is caught at once: this process's parent is no longer ``parent``."""
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
