"""Which processes a test's tree left behind: shared by the tests that kill a process's owner
(tests/astro_rmaat/test_workers.py, tests/astro_sim/test_sweep_standalone.py)."""

from __future__ import annotations

import psutil


def working_in(folder) -> list[int]:
    """Live processes (not zombies; stopped ones count) whose working directory or command line
    lies in ``folder``."""
    found = []
    for p in psutil.process_iter(["cwd", "cmdline", "status"]):   # None where a field is refused
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if (p.info["cwd"] or "").startswith(str(folder)) or str(folder) in " ".join(p.info["cmdline"] or ()):
            found.append(p.pid)
    return found
