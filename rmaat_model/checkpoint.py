"""Model weights in safetensors, carrying the ModelConfig that rebuilds the model.

``save(model, cfg, "run/model.safetensors")`` writes

    run/model.safetensors     the state_dict (the retention table ``rf_table`` included), with
                              the ModelConfig JSON in the file's metadata (key "model_config")
    run/model.config.json     the same ModelConfig JSON beside it, for people and tools

The metadata copy makes one file self-sufficient (callers that write through a temporary
name, like the trainer's atomic rename, get no sidecar and need none). ``load`` reads the
metadata, else the sidecar. Loading never re-reads the retention.json named in the
config: the schedule travels in the state_dict, so a checkpoint stays usable when that
file moves or changes. A config stored before the block layout and the RF reading were
fields rebuilds the model it was trained as (pre-LN, literal): see ``LEGACY_DEFAULTS``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save as st_save

from astro_rmaat import config as cfgio
from astro_rmaat import runs
from astro_rmaat.errors import DataError
from rmaat_model.model import RMAAT, build_model
from rmaat_model.model_config import ModelConfig

META_KEY = "model_config"


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


#: fields a checkpoint written before they existed lacks, with the value its model was built with
LEGACY_DEFAULTS = {"norm": "pre", "retention_reading": "literal"}


def with_legacy_layout(data: dict) -> dict:
    """A stored model config without ``norm`` / ``retention_reading`` predates them: its model
    had pre-LN blocks and the literal RF reading, so it is rebuilt that way, not with today's
    defaults (post-LN, integrating)."""
    if not isinstance(data, dict):
        return data
    return {**LEGACY_DEFAULTS, **data}


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
