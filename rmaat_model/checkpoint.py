"""Model weights in safetensors, with the ModelConfig that rebuilds the model beside them.

    <dir>/model.safetensors    the state_dict (the retention table ``rf_table`` included)
    <dir>/model_config.json    ModelConfig as JSON (astro_rmaat.config.to_dict)

Loading never re-reads the retention.json named in the config: the schedule travels in
the state_dict, so a checkpoint stays usable when that file moves or changes.
Both files are written atomically (temporary file + rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from astro_rmaat import config as cfgio
from astro_rmaat import runs
from astro_rmaat.errors import DataError
from rmaat_model.model import ModelConfig, RMAAT, build_model

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"


def save_model(model: RMAAT, directory: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` and ``model_config.json`` into ``directory``; return the weights path."""
    model = getattr(model, "module", model)  # DDP
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    runs.atomic_write_json(directory / CONFIG_FILE, cfgio.to_dict(model.cfg))
    return runs.atomic_write_bytes(directory / WEIGHTS_FILE, save(tensors, metadata={"format": "pt"}))


def load_config(directory: str | os.PathLike) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise DataError(f"model config {str(path)!r} does not exist (expected beside {WEIGHTS_FILE})")
    return cfgio.from_dict(ModelConfig, cfgio.read_json_file(path, what="model config"))


def load_model(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> RMAAT:
    """Rebuild the model from ``model_config.json`` and load ``model.safetensors`` (strict)."""
    cfg = load_config(directory)
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise DataError(f"model weights {str(path)!r} do not exist")
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise DataError(f"model weights {str(path)!r} are not a readable safetensors file: {exc}") from None
    model = build_model(cfg, rf_table=state.get("rf_table"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"model weights {str(path)!r} do not fit the config beside them: {exc}") from None
    return model.to(device)
