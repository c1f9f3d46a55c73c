"""glibc malloc thresholds for a training process (Linux).

PyTorch's CPU tensors come from the C library's ``malloc``. With glibc's defaults a block of
128 KiB or more is first mapped on its own and unmapped when freed, and the threshold then
adapts upwards as blocks are freed; the heap's free top is handed back to the kernel once it
passes twice that threshold. A training step allocates and frees the same few hundred
activation blocks every step, so the heap keeps shrinking and growing again, and every regrown
page is a page fault on first touch (about 4 200 per step of the demo's ListOps model).

``tune_malloc`` fixes both thresholds instead: blocks under 32 MiB come from the heap, and up
to 256 MiB of free heap top is kept for the next step. Memory a step frees is reused by the
next one (about 350 faults per step). The cost is memory the process holds but does not use:
up to 256 MiB of free heap top, and freed blocks under 32 MiB that stay in the heap for reuse
(glibc's defaults also keep those, up to a threshold that adapts up to the same 32 MiB); blocks
of 32 MiB or more are still mapped and unmapped on their own. Measured with
``bench/train_step_speed.py --malloc`` (the demo's ListOps step, 1 thread): 1.10-1.14x the
steps/s of glibc's defaults (docs/benchmarks.md).

``rmaat`` (rmaat_app.cli.main) calls it once per process for every verb; set
``RMAAT_MALLOC_TUNING=0`` to keep glibc's defaults. Library users call it themselves. The
setting is process-wide and lasts for the process (glibc has no way to read it back). On
another C library or OS it does nothing and returns False.

Third-party imports: none.
"""

from __future__ import annotations

import os
import platform

from astro_rmaat.errors import ConfigError

ENV = "RMAAT_MALLOC_TUNING"
MMAP_THRESHOLD = 32 * 2**20     # glibc's own upper bound for its adaptive threshold (64-bit)
TRIM_THRESHOLD = 256 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt parameters (<malloc.h>)


def enabled() -> bool:
    """False when ``RMAAT_MALLOC_TUNING`` is 0; raises ConfigError for a value other than 0 or 1."""
    value = os.environ.get(ENV, "1").strip()
    if value not in ("0", "1"):
        raise ConfigError(f"{ENV} = {value!r}: expected 0 (glibc's defaults) or 1 (tuned, the default)")
    return value == "1"


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds (bytes) for this process. Returns True when set,
    False on another C library or OS. Ignores ``RMAAT_MALLOC_TUNING`` (see ``enabled``)."""
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
            raise ConfigError(f"{name} = {value!r}: expected a positive number of bytes below 2 GiB")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:   # a Python built without ctypes, or a process without libc's symbols, runs as it is
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) & bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
