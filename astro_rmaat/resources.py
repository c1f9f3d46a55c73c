"""What this machine lets a run use: memory (a container's limit included) and disk space.

The checks that refuse a size before the work starts read these (``check_memory``, the data
generators' ``check_room``): each is a lower bound of what the work needs, so a feasible size
is never refused.

Third-party imports: none.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from astro_rmaat.errors import ConfigError


def memory_limit_bytes() -> int | None:
    """The memory this process may use: the machine's physical memory, or its control group's
    limit where that is lower (a container's); None where the system says neither."""
    limits = cgroup_memory_limits()
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):   # no sysconf, or not these names
        pass
    return min(limits) if limits else None


def cgroup_memory_limits(proc: str | os.PathLike = "/proc/self/cgroup",
                         root: str | os.PathLike = "/sys/fs/cgroup") -> list[int]:
    """The memory limits (bytes) of this process's Linux control groups: cgroup v2's
    ``memory.max`` and v1's ``memory.limit_in_bytes``, in its own group's folder or, where the
    group's folder is the mount's root (a container's namespace), there. Empty where there is
    none ("max", or no cgroup file system)."""
    try:
        lines = Path(proc).read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, group = parts
        if hierarchy == "0" and controllers == "":
            base, name = Path(root), "memory.max"
        elif "memory" in controllers.split(","):
            base, name = Path(root) / "memory", "memory.limit_in_bytes"
        else:
            continue
        for folder in (base / group.lstrip("/"), base):
            try:
                text = (folder / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit():
                found.append(int(text))
            break
    return found


def check_memory(need_bytes: int, what: str, instead: str) -> None:
    """Refuse (ConfigError), before the work, arrays that need more than ``memory_limit_bytes``:
    ``what`` names the values and counts (``...: N things``), ``instead`` what to change."""
    have = memory_limit_bytes()
    if have is not None and need_bytes > have:
        raise ConfigError(f"{what} take at least {need_bytes / 2**30:,.1f} GiB, more than the "
                          f"{have / 2**30:.1f} GiB of memory; expected {instead}")


def free_space(path: str | os.PathLike) -> tuple[Path, int, int | None] | None:
    """(the nearest existing folder of ``path``, the bytes and the file entries (inodes; None
    where the file system does not count them) free on its file system), or None when it cannot
    be read: what a run there may write at most."""
    for p in (Path(path).absolute(), *Path(path).absolute().parents):
        if p.is_dir():
            try:
                free = shutil.disk_usage(p).free
            except OSError:
                return None
            try:
                st = os.statvfs(p)
                inodes = st.f_favail if st.f_files > 0 else None   # 0 files in all: not counted (btrfs, some FUSE)
            except (AttributeError, OSError):   # no statvfs (Windows)
                inodes = None
            return p, free, inodes
    return None
