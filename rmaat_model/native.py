"""The fused block in C++ (``csrc/fused_block.cpp``), built on first use and cached.

An eager training step of a memory arch is mostly small operators, and about a microsecond of
Python runs around each: the fused block's forward and backward (``rmaat_model.fused_block``)
issue about a hundred of them per layer and segment. ``csrc/fused_block.cpp`` is the same block
-- the same ATen operators in the same order on the same operands, and its autograd node -- with
no interpreter between the operators, and on the CPU with chains of cheap elementwise operators
made one exact loop each. The extension also makes the dropout draw (``kernels.dropout_masks``,
every arch): ``random_``'s values, read from the generator's MT19937 state in blocks (the
default one, or a batch shard's own), and their {0, scale} values, the generator left where
``random_`` leaves it. Its values, gradients and generator states are bitwise the Python
path's (tests/rmaat_model/test_native.py), so a run's numbers do not depend on which path ran.
Two loops outside the model are the extension's too, AdamW's step (``optim.AdamW``) and the
batch shards' gradient sums, bitwise torch's operators (tests/rmaat_model/test_native_optim.py).

The extension is compiled by ``torch.utils.cpp_extension`` the first time a process needs it
(about 25 s on 2 cores; it needs a C++ compiler and ninja) into torch's extension cache
(``TORCH_EXTENSIONS_DIR``, else ``~/.cache/torch_extensions``), and loaded from there after
that. One process builds while the others wait (a ``filelock`` beside the cache, released if
its holder dies). Where it cannot be built, the block and the draw run their Python code, with
one warning naming why. ``RMAAT_NATIVE=0`` keeps to the Python path; ``RMAAT_NATIVE=1`` makes a failed build
an error (read when a process first needs the block).

Used for full-precision tensors (float32, float64) outside ``torch.compile``; mixed precision
and compiled blocks take the Python path.

Third-party imports: torch, filelock.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

from astro_rmaat.errors import ConfigError

SOURCE = Path(__file__).with_name("csrc") / "fused_block.cpp"
# -ffp-contract=off: no multiply-add contracted into one rounding, so the fused loops round as
# ATen's operators do; -fno-trapping-math: their min / max selects vectorise (without it GCC
# keeps a branch per element, ten times slower on random signs); neither changes a result
CFLAGS = ("-O3", "-ffp-contract=off", "-fno-trapping-math")
ENV = "RMAAT_NATIVE"
_state: dict = {}            # "module": the loaded extension or None; "reason": why not; "build_s"
_guard = threading.Lock()


def extension_name() -> str:
    """The extension's name, with torch's version and the source's hash in it: a binary built
    against one torch, or from another version of the source (another checkout on the same
    machine), is never loaded, nor rebuilt in place while another process has it loaded."""
    tag = "".join(c if c.isalnum() else "_" for c in torch.__version__)
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:12]
    return f"rmaat_native_torch{tag}_{digest}"


def mode() -> str:
    """``RMAAT_NATIVE``: "auto" (unset), "0" or "1"."""
    value = os.environ.get(ENV, "auto").strip() or "auto"
    if value not in ("auto", "0", "1"):
        raise ConfigError(f"{ENV}={value!r}: expected 0 (the Python block), 1 (the C++ block, or an error) "
                          "or unset (the C++ block where it builds)")
    return value


def _ninja_on_path() -> None:
    """torch.utils.cpp_extension runs ``ninja`` from PATH; the ninja wheel puts it beside this
    interpreter (a venv's bin), which is not on PATH unless the venv is activated."""
    if shutil.which("ninja") is None:
        try:
            import ninja
            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass


def _build_root() -> Path:
    """Where torch.utils.cpp_extension keeps its builds (a build directory per extension lies
    below it)."""
    from torch.utils import cpp_extension

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())


def _build() -> ModuleType:
    from torch.utils import cpp_extension
    import filelock

    _ninja_on_path()
    name = extension_name()
    root = _build_root()
    root.mkdir(parents=True, exist_ok=True)
    # torch's own build lock is a file that a killed build leaves behind, and every later
    # build would wait on it forever; under this lock (an OS lock, gone with its holder) no
    # build is running, so a torch lock found there is stale
    with filelock.FileLock(str(root / f"{name}.build.lock")):
        for stale in root.glob(f"**/{name}*/lock"):
            stale.unlink(missing_ok=True)
        if not any(root.glob(f"**/{name}*/{name}*.so")):
            print(f"rmaat: compiling the C++ block into {root} (once for this torch and this source, about 25 s on 2 cores)",
                  file=sys.stderr, flush=True)
        return cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=list(CFLAGS), verbose=False)


def extension() -> ModuleType | None:
    """The loaded extension, building it on first use, or None where it is off or failed
    (``status`` says why)."""
    if "module" in _state:
        return _state["module"]
    with _guard:
        if "module" in _state:
            return _state["module"]
        if mode() == "0":
            _state.update(module=None, reason=f"{ENV}=0")
            return None
        t0 = time.perf_counter()
        try:
            module = _build()
        except Exception as exc:   # no compiler, no ninja, a failed compile: the Python path runs
            reason = _why(exc)
            if mode() == "1":
                raise ConfigError(f"{ENV}=1 and the C++ extension (the fused block, the dropout draw, AdamW's step) "
                                  f"could not be built: {reason}") from None
            _state.update(module=None, reason=reason)
            warnings.warn(f"rmaat: the C++ extension (the fused block, the dropout draw, AdamW's step) could not "
                          f"be built ({reason}); the Python block and draw and torch's step run instead (the "
                          "same numbers, slower)",
                          RuntimeWarning, stacklevel=2)
            return None
        _state.update(module=module, reason=None, build_s=time.perf_counter() - t0)
        return module


def _why(exc: Exception) -> str:
    """The part of a failed build's message that says why: the compiler's error lines where
    there are any (torch's message puts the ninja command line before them), else its end."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]   # a compiler's diagnostics
    text = " | ".join(errors[:3]) if errors else " ".join(lines)[-300:]
    return text[:300] or type(exc).__name__


def status() -> str:
    """One line: which block runs, and why not the C++ one where it does not."""
    module = extension()
    if module is not None:
        return f"C++ block ({extension_name()}, loaded in {_state['build_s']:.1f} s)"
    return f"Python block ({_state['reason']})"


@contextlib.contextmanager
def disabled():
    """The Python block for the duration (benchmarks compare the two side by side in one
    process). Process-wide: not for one thread while another trains."""
    with _guard:
        saved = dict(_state)
        _state.clear()
        _state.update(module=None, reason="native.disabled()")
    try:
        yield
    finally:
        with _guard:
            _state.clear()
            _state.update(saved)


def usable(x: torch.Tensor, *tensors: torch.Tensor | None) -> bool:
    """Whether the C++ block can run on x and the block's other tensors: every one the same
    full-precision dtype, outside torch.compile's tracing."""
    if x.dtype not in (torch.float32, torch.float64) or torch.compiler.is_compiling():
        return False
    return all(t is None or t.dtype == x.dtype for t in tensors)


if __name__ == "__main__":   # python -m rmaat_model.native: build (or load) and say which block runs
    try:
        print(status())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
