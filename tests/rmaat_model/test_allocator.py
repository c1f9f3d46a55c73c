"""rmaat_model.allocator: glibc's thresholds, set for a training process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from astro_rmaat.errors import ConfigError
from rmaat_model import allocator

REPO = Path(__file__).resolve().parents[2]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Three "steps": each allocates 16 tensors of 4 MiB (activations), then frees them all. glibc's
# mallinfo2 reports the heap (arena), the blocks mapped on their own (hblks) and the free top it
# could hand back (keepcost), in MiB, in the middle and at the end of each step.
PROBE = r"""
import ctypes, json, sys
if sys.argv[1] == "tuned":
    from rmaat_model.allocator import tune_malloc
    assert tune_malloc()
import torch
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
def info():
    i = mallinfo2()
    return {"heap": i.arena >> 20, "mapped_blocks": i.hblks, "free_top": i.keepcost >> 20}
steps = []
for _ in range(3):
    blocks = [torch.ones(2**20) for _ in range(16)]
    mid = info()
    del blocks
    steps.append({"mid": mid, "end": info()})
print(json.dumps(steps))
"""


def probe(mode: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# another allocator preloaded, or glibc's malloc configured from the environment, changes the
# baseline this test compares with
OTHER_MALLOC = [k for k in ("LD_PRELOAD", "GLIBC_TUNABLES") if os.environ.get(k)] + \
    [k for k in os.environ if k.startswith("MALLOC_")]


@pytest.mark.skipif(not GLIBC or tuple(map(int, platform.libc_ver()[1].split(".")[:2])) < (2, 33),
                    reason="glibc >= 2.33 (mallinfo2)")
@pytest.mark.skipif(bool(OTHER_MALLOC), reason=f"malloc set from the environment: {OTHER_MALLOC}")
def test_tuned_thresholds_keep_a_steps_freed_memory_for_the_next_one():
    """With glibc's defaults the first step's 64 MiB of 4 MiB blocks are mapped one by one and
    unmapped when freed; later steps take them from the heap, which glibc trims back whenever
    its free top is not pinned by a later allocation (whether it is varies from run to run), so
    steps fault their memory in again. With the tuned thresholds the blocks come from the heap
    and stay there, free, for the next step, in every run.

    The reuse is not to the byte: torch asks for 64-byte-aligned blocks, glibc serves an aligned
    request from a chunk somewhat larger than the block, and a freed block's hole is sometimes
    just too small for it, so the heap still grows by a few blocks: 8-36 MiB from the first step
    to the second and 0-4 MiB from the second to the third in 32 runs of the probe, 8 MiB in one
    run of the suite. Without reuse it would grow by the whole step, 64 MiB; the bound below is
    half of that."""
    default, tuned = probe("default"), probe("tuned")
    assert default[0]["mid"]["mapped_blocks"] >= 16
    for step in tuned:
        assert step["mid"]["mapped_blocks"] < 16
        assert step["end"]["heap"] >= step["mid"]["heap"]                # nothing handed back
    assert tuned[2]["mid"]["heap"] - tuned[1]["mid"]["heap"] < 32       # the next step reuses it (not +64)


def test_the_environment_switch(monkeypatch):
    monkeypatch.delenv(allocator.ENV, raising=False)
    assert allocator.enabled()
    monkeypatch.setenv(allocator.ENV, "0")
    assert not allocator.enabled()
    monkeypatch.setenv(allocator.ENV, "1")
    assert allocator.enabled()
    monkeypatch.setenv(allocator.ENV, "off")
    with pytest.raises(ConfigError, match=r"RMAAT_MALLOC_TUNING = 'off': expected 0 .* or 1"):
        allocator.enabled()


@pytest.mark.parametrize("kw, needle", [({"mmap_threshold": 0}, "mmap_threshold = 0"),
                                        ({"trim_threshold": 2**31}, "trim_threshold = 2147483648"),
                                        ({"mmap_threshold": 1.5}, "mmap_threshold = 1.5"),
                                        ({"trim_threshold": True}, "trim_threshold = True")])
def test_bad_thresholds(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        allocator.tune_malloc(**kw)
