"""Activation-memory profile of a training step (bytes, not memory tokens): two measurements.

1. ``SavedTensors`` — deterministic: every tensor autograd saves for the backward passes
   through ``torch.autograd.graph.saved_tensors_hooks``; we count the bytes of each distinct
   storage once (views and repeated saves of one storage are one allocation) and release
   them when autograd frees the graph that held them, so ``peak_bytes`` is the high-water
   mark of live saved activations. Storages of ``ignore`` (the parameters) are not counted:
   what remains is activation memory. This is the number the tests assert on.
2. ``peak_rss`` — the operating system's view: a step run in a fresh Python process, its
   peak resident set size (``VmHWM`` after resetting it through ``/proc/self/clear_refs``,
   else ``ru_maxrss``) minus the resident size just before the step. Noisy (allocator
   caching, shared machine); for benchmarks only.

``python -m rmaat_model.activation_profile MODULE:FUNCTION JSON_KWARGS`` is the subprocess side: it
calls ``FUNCTION(**kwargs)``, which must set everything up and return the step (a
zero-argument callable); then it measures that step and prints one JSON line.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import time
import weakref
from typing import Any, Callable, Iterable

import torch

from astro_rmaat.errors import ConfigError


class _Packed:
    """What autograd keeps instead of the tensor; its death releases the storage count."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


class SavedTensors:
    """Context manager counting live bytes saved for backward (storages de-duplicated)."""

    def __init__(self, ignore: Iterable[torch.Tensor] = ()):
        self._ignore = {self._key(t) for t in ignore}
        self._live: dict[tuple, list[int]] = {}   # storage key -> [nbytes, references]
        self.current_bytes = 0
        self.peak_bytes = 0
        self.packed_bytes = 0                      # every distinct storage ever saved, summed
        self._hooks = None

    @staticmethod
    def _key(t: torch.Tensor) -> tuple:
        s = t.untyped_storage()
        return (t.device.type, t.device.index, s.data_ptr(), s.nbytes())

    def _release(self, key: tuple) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current_bytes -= entry[0]
            del self._live[key]

    def _pack(self, t: torch.Tensor) -> Any:
        packed = _Packed(t)
        if t.layout != torch.strided or t.untyped_storage().nbytes() == 0:
            return packed
        key = self._key(t)
        if key in self._ignore:
            return packed
        entry = self._live.get(key)
        if entry is None:
            self._live[key] = [key[3], 1]
            self.current_bytes += key[3]
            self.packed_bytes += key[3]
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        else:
            entry[1] += 1
        weakref.finalize(packed, self._release, key)
        return packed

    @staticmethod
    def _unpack(packed: _Packed) -> torch.Tensor:
        return packed.tensor

    def __enter__(self) -> "SavedTensors":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def saved_bytes(fn: Callable[[], Any], ignore: Iterable[torch.Tensor] = ()) -> dict[str, int]:
    """Run ``fn()`` (forward and backward) and return peak/total saved-activation bytes."""
    with SavedTensors(ignore) as counter:
        fn()
    return {"peak_bytes": counter.peak_bytes, "packed_bytes": counter.packed_bytes,
            "live_after_bytes": counter.current_bytes}


# --------------------------------------------------------------------------- peak RSS
def _rss_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    """Hand memory freed by the allocator back to the OS (glibc), so the next peak is honest."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_step_here(step: Callable[[], Any], warmup: bool = True) -> dict[str, float]:
    """Peak-RSS increase of ``step()`` in this process (call it in a fresh one).

    With ``warmup`` the step runs once first, so one-time costs (lazy imports, kernel and
    thread-pool initialisation: about 36 MB the first time fork_rng and the replay run) land
    in the baseline; the freed heap is then trimmed and the high-water mark reset.
    """
    if warmup:
        step()
        _trim_heap()
    reset = _reset_peak()
    before = _rss_bytes("VmRSS") or 0
    t0 = time.perf_counter()
    step()
    wall = time.perf_counter() - t0
    peak = _rss_bytes("VmHWM") if reset else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rss_before_bytes": before, "peak_rss_bytes": peak, "peak_rss_increase_bytes": peak - before,
            "wall_s": wall, "hwm_reset": reset}


def peak_rss(target: str, kwargs: dict[str, Any] | None = None, *, timeout: float = 600,
             threads: int | None = None) -> dict[str, float]:
    """Run ``target`` ("module:function" returning a step) in a fresh process; measure the step."""
    if ":" not in target:
        raise ConfigError(f"target {target!r}: expected 'module:function'")
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-m", "rmaat_model.activation_profile", target, json.dumps(kwargs or {})],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe {target} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def training_step(model: dict[str, Any], batch: int, length: int, method: str = "amrb",
                  k: int | None = None, seed: int = 0, threads: int | None = None,
                  retention_file: str | None = None) -> Callable[[], None]:
    """A ready-to-run forward+backward of a ModelConfig (given as a dict) on random tokens."""
    from astro_rmaat.config import from_dict
    from rmaat_model.amrb import forward_backward
    from rmaat_model.model import build_model
    from rmaat_model.model_config import ModelConfig

    if threads is not None:
        torch.set_num_threads(threads)
    cfg_dict = dict(model)
    if retention_file is not None:
        cfg_dict["retention_file"] = retention_file
    cfg = from_dict(ModelConfig, cfg_dict)
    torch.manual_seed(seed)
    net = build_model(cfg)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, cfg.vocab_size, (batch, length), generator=g)
    tokens2 = torch.randint(1, cfg.vocab_size, (batch, length), generator=g) if cfg.head == "match" else None
    labels = torch.randint(0, cfg.n_classes, (batch,), generator=g)

    def step() -> None:
        forward_backward(net, tokens, labels, method=method, k=k, tokens2=tokens2)
    return step


def _main(argv: list[str]) -> None:
    target, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    module_name, attr = target.split(":")
    make = getattr(importlib.import_module(module_name), attr)
    step = make(**kwargs)
    print(json.dumps(measure_step_here(step)))


if __name__ == "__main__":
    _main(sys.argv[1:])
