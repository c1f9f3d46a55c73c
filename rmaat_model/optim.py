"""The optimiser of a training run: AdamW over the model's parameter groups, with a linear
warm-up then cosine decay of the learning rate (``OptimConfig`` in rmaat_model.train_config)."""

from __future__ import annotations

import math
from typing import Any

import torch

from rmaat_model import distributed as D
from rmaat_model.train_config import OptimConfig, TrainConfig


def param_groups(model: torch.nn.Module, optim: OptimConfig) -> list[dict[str, Any]]:
    """AdamW groups from the model (``RMAAT.param_groups``): matrices with weight decay;
    biases, norms and the initial memory without; a ``learned`` retention table in its own
    group at ``retention_lr`` without weight decay. Each group is named for the logs."""
    groups = D.unwrap(model).param_groups(optim.lr, optim.weight_decay, optim.retention_lr)
    for group, name in zip(groups, ("decay", "no_decay", "retention")):
        group["name"] = name
    return [g for g in groups if g["params"]]


class WarmupCosine:
    """lr multiplier: linear warm-up over ``warmup`` steps, then cosine to ``floor``."""

    def __init__(self, warmup: int, total: int, floor: float) -> None:
        self.warmup, self.total, self.floor = warmup, total, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig):
    """(AdamW, LambdaLR scheduler) for ``cfg.steps`` optimiser steps. Each step ends by
    projecting a learned retention table onto its range (``RMAAT.project_retention``)."""
    opt = torch.optim.AdamW(param_groups(model, cfg.optim), lr=cfg.optim.lr,
                            betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    raw = D.unwrap(model)
    if raw.retention_parameters():
        opt.register_step_post_hook(lambda *_: raw.project_retention())
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, WarmupCosine(cfg.optim.warmup_steps, cfg.steps, cfg.optim.min_lr_ratio))
    return opt, sched
