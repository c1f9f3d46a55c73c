"""The optimiser of a training run: AdamW over the model's parameter groups, with a linear
warm-up then cosine decay of the learning rate (``OptimConfig`` in rmaat_model.train_config).

``AdamW`` is torch's, with its step over float32 CPU parameters as one C++ loop per parameter
(rmaat_model.native) instead of eight operators each: bitwise the same parameters, moments and
step counts (tests/rmaat_model/test_native_optim.py), about a millisecond less per step for the demo's
models. Its state and state dict are torch's; a checkpoint loads into either class."""

from __future__ import annotations

import math
from typing import Any

import torch

from rmaat_model import distributed as D
from rmaat_model import native
from rmaat_model.train_config import OptimConfig, TrainConfig


def param_groups(model: torch.nn.Module, optim: OptimConfig) -> list[dict[str, Any]]:
    """AdamW groups from the model (``RMAAT.param_groups``): matrices with weight decay;
    biases, norms and the initial memory without; a ``learned`` retention table in its own
    group at ``retention_lr`` without weight decay. Each group is named for the logs."""
    groups = D.unwrap(model).param_groups(optim.lr, optim.weight_decay, optim.retention_lr)
    for group, name in zip(groups, ("decay", "no_decay", "retention")):
        group["name"] = name
    return [g for g in groups if g["params"]]


class AdamW(torch.optim.AdamW):
    """torch.optim.AdamW whose step runs the extension's ``adamw_step`` where it gives torch's
    bits: every group with decoupled weight decay, numbers (not tensors) for its lr, betas,
    weight decay and eps, 1 - beta1 under 1/2, and none of amsgrad, maximize, capturable,
    differentiable or fused; every parameter that has a gradient, its gradient and its moments
    dense float32 CPU tensors (the extension checks those, before it changes anything).
    Otherwise, or where the extension is not loaded, torch's own step runs."""

    @torch.no_grad()
    def step(self, closure=None):
        ext = native.extension() if all(_plain(group) for group in self.param_groups) else None
        if ext is None:
            return self._torch_step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lists: list[list[list[torch.Tensor]]] = [[], [], [], [], []]
        numbers: list[list[float]] = [[], [], [], [], []]
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if (grad := p.grad) is None:
                    continue
                state = self.state[p]
                if not state:   # as torch.optim.Adam._init_group makes it
                    state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            for out, one in zip(lists, (params, grads, exp_avgs, exp_avg_sqs, steps)):
                out.append(one)
            beta1, beta2 = group["betas"]
            for out, x in zip(numbers, (group["lr"], beta1, beta2, group["weight_decay"], group["eps"])):
                out.append(float(x))
        if not ext.adamw_step(*lists, *numbers):
            self._torch_step(None)   # a tensor the loop does not take: torch's step (the closure has run)
        return loss

    def _torch_step(self, closure):
        """torch's step without its step hooks, which this class's step (wrapped by torch like
        any optimiser's) runs already: where an instance of a parent class had torch wrap the
        parent's step too, its unwrapped function."""
        fn = super().step.__func__
        if getattr(fn, "hooked", False):
            fn = fn.__wrapped__
        return fn(self, closure)


def _plain(group: dict) -> bool:
    """Whether a group's options are ones ``adamw_step`` computes as torch does, its parameters
    on the CPU (elsewhere the extension is not even loaded for it)."""
    return not (group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]
                or group["fused"] or not group.get("decoupled_weight_decay", True)
                or not all(_number(group[key]) for key in ("lr", "weight_decay", "eps"))
                or not all(_number(b) for b in group["betas"])
                or not all(p.is_cpu for p in group["params"]))


def _number(x) -> bool:
    """A Python int or float (not a tensor, which torch's step treats otherwise)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _scalar_dtype() -> torch.dtype:
    """The dtype torch's Adam gives a new ``step`` on the CPU."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


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
    opt = AdamW(param_groups(model, cfg.optim), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    raw = D.unwrap(model)
    if raw.retention_parameters():
        opt.register_step_post_hook(lambda *_: raw.project_retention())
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, WarmupCosine(cfg.optim.warmup_steps, cfg.steps, cfg.optim.min_lr_ratio))
    return opt, sched
