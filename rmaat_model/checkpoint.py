"""Checkpoints: the model weights (safetensors, carrying their ModelConfig) and a training
run's resume state (``ckpt.pt``); every file name and format of both lives here.

Run files (rmaat_model.train writes them; the run layout is in its module doc):

    model.safetensors   the latest weights (MODEL_FILE)
    best.safetensors    the weights with the best validation accuracy so far (BEST_FILE)
    ckpt.pt             full resume state (CKPT_FILE, format CKPT_FORMAT): model, optimiser,
                        scheduler, step, per-rank RNG states and train-loss windows,
                        best-so-far, metrics rows (``training_state`` lists the keys)
    timing.json         wall-clock seconds of an unfinished run (TIMING_FILE)

Weights. ``save(model, cfg, "run/model.safetensors")`` writes

    run/model.safetensors     the state_dict (the retention table ``rf_table`` included), with
                              the ModelConfig JSON in the file's metadata (key "model_config")
    run/model.config.json     the same ModelConfig JSON beside it, for people and tools

The metadata copy makes one file self-sufficient (callers that write through a temporary
name, like the trainer's atomic rename, get no sidecar and need none). ``load`` reads the
metadata, else the sidecar. Loading never re-reads the retention.json named in the
config: the schedule travels in the state_dict, so a checkpoint stays usable when that
file moves or changes. A config stored before the block layout and the RF reading were
fields rebuilds the model it was trained as (pre-LN, literal): see ``LEGACY_DEFAULTS``; a
learned table stored before ``retention_range`` reads as unbounded ("free").
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Callable, Collection

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save as st_save

from astro_rmaat import config as cfgio
from astro_rmaat import runs
from astro_rmaat.errors import ConfigError, DataError, RunExistsError
from rmaat_model.model import RMAAT, build_model
from rmaat_model.model_config import LEGACY_DEFAULTS, ModelConfig, with_legacy_layout  # noqa: F401

META_KEY = "model_config"
MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
CKPT_FILE = "ckpt.pt"
CKPT_FORMAT = "rmaat.train-ckpt/v1"
TIMING_FILE = "timing.json"   # wall-clock seconds of an unfinished run (moved into meta.json)


def sidecar_path(path: str | os.PathLike) -> Path:
    """``x/model.safetensors`` -> ``x/model.config.json``."""
    p = Path(path)
    return p.with_name(p.name[: -len(".safetensors")] + ".config.json")


def save(model: RMAAT, cfg: ModelConfig | None, path: str | os.PathLike) -> Path:
    """Write the weights (atomically) and, for a ``*.safetensors`` path, the config sidecar."""
    model = getattr(model, "module", model)  # DDP
    cfg = model.cfg if cfg is None else cfg
    if cfg != model.cfg:
        raise DataError(f"save: the config given differs from the model's own ({cfg} vs {model.cfg})")
    path = Path(path)
    cfg_json = json.dumps(cfgio.to_dict(cfg), sort_keys=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    data = canonical_header(st_save(tensors, metadata={"format": "pt", META_KEY: cfg_json}))
    runs.atomic_write_bytes(path, data)
    if path.name.endswith(".safetensors"):
        runs.atomic_write_json(sidecar_path(path), cfgio.to_dict(cfg))
    return path


def canonical_header(data: bytes) -> bytes:
    """The safetensors bytes with the header's ``__metadata__`` keys in sorted order.

    safetensors keeps the metadata in a hash map, so its key order (and the file's sha256)
    changes from one process to the next; the same weights must give the same bytes. The
    header is an 8-byte little-endian length, then JSON padded with spaces to 8 bytes; the
    tensor offsets are relative to the data that follows, so rewriting the JSON is safe.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def load_config(path: str | os.PathLike) -> ModelConfig:
    """The ModelConfig of a weights file (its metadata, else the sidecar JSON)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model weights {str(path)!r} do not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise DataError(f"model weights {str(path)!r} are not a readable safetensors file: {exc}") from None
    if META_KEY in meta:
        try:
            data = json.loads(meta[META_KEY])
        except json.JSONDecodeError as exc:
            raise DataError(f"model weights {str(path)!r}: the stored model config is not JSON ({exc})") from None
    elif path.name.endswith(".safetensors") and sidecar_path(path).is_file():
        data = cfgio.read_json_file(sidecar_path(path), what="model config")
    else:
        raise DataError(f"model weights {str(path)!r} carry no model config and no "
                        f"{sidecar_path(path).name if path.name.endswith('.safetensors') else 'sidecar'} "
                        "lies beside them; cannot rebuild the model")
    return cfgio.from_dict(ModelConfig, with_legacy_layout(data), where="model_config")


def load(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> tuple[RMAAT, ModelConfig]:
    """Rebuild the model from its config and load the weights (strict). Returns (model, cfg)."""
    cfg = load_config(path)
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise DataError(f"model weights {str(path)!r} are not a readable safetensors file: {exc}") from None
    model = build_model(cfg, rf_table=state.get("rf_table"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"model weights {str(path)!r} do not fit the config stored with them: {exc}") from None
    return model.to(map_location), cfg


def load_weights(run_dir: str | Path, name: str = BEST_FILE,
                 device: torch.device | str = "cpu") -> RMAAT:
    """Rebuild a run's model from its weights file ``name`` (the config read from the file)."""
    model, _ = load(Path(run_dir) / name, map_location=device)
    return model


# --------------------------------------------------------------------------- ckpt.pt
def training_state(*, config: dict[str, Any], world_size: int, step: int, model: torch.nn.Module,
                   optimizer: torch.optim.Optimizer, scheduler: Any, per_rank: list[dict[str, Any]],
                   best: dict[str, Any], metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``ckpt.pt`` holds; ``per_rank``: each rank's ``{"rng": rng_state(), "window": ...}``.
    The key order is part of the file's bytes."""
    return {"format": CKPT_FORMAT, "config": config, "world_size": world_size,
            "step": step, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": [r["rng"] for r in per_rank], "window": [r["window"] for r in per_rank],
            "best": best, "metrics": metrics}


def _interned(obj: Any) -> Any:
    """``obj`` with every string interned: pickle memoises a string per object, so equal
    strings that are shared in one run and separate in a resumed one gave different bytes."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {_interned(k): _interned(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_interned(v) for v in obj)
    return obj


def save_ckpt(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (a ``training_state``) atomically."""
    buf = io.BytesIO()
    torch.save(_interned(state), buf)
    runs.atomic_write_bytes(path, buf.getvalue())


def load_ckpt(path: Path) -> dict[str, Any]:
    """Read ``ckpt.pt``; an unreadable or foreign file is one clear DataError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
        raise DataError(f"checkpoint {str(path)!r} is corrupted or unreadable "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                        "delete it to restart the run from step 0, or use a new --out") from None
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise DataError(f"checkpoint {str(path)!r} is not a {CKPT_FORMAT} training checkpoint; "
                        "delete it to restart the run from step 0, or use a new --out")
    return state


def check_resumable(state: dict[str, Any], path: Path, config: dict[str, Any], world_size: int,
                    stored: Callable[[dict], dict] | None = None, free: Collection[str] = ()) -> None:
    """A checkpoint resumes only the config that wrote it (its top-level fields ``free`` aside:
    ``runs.prepare_run_dir``), with as many processes. ``stored`` reads a config written by an
    earlier version as today's (``runs.read_stored``)."""
    difference = runs.resume_difference(runs.read_stored(state["config"], stored), config, free)
    if difference is not None:
        raise RunExistsError(f"{str(path)!r} was written by a different config "
                             f"({difference}); use a new --out directory")
    if state["world_size"] != world_size:
        raise ConfigError(f"{str(path)!r} was written by {state['world_size']} "
                          f"process(es); resume it with the same number (now {world_size})")


def rng_state() -> dict[str, Any]:
    """Every RNG the step touches, as tensors and plain lists (loadable with weights_only)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                       int(np_state[2]), int(np_state[3]), float(np_state[4])],
             "python": [py_state[0], list(py_state[1]), py_state[2]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_timing(run_dir: Path) -> dict[str, Any]:
    """Wall-clock seconds of an unfinished run (``timing.json``); empty when absent/unreadable."""
    try:
        data = json.loads((run_dir / TIMING_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
