"""Optimisation of a TransferModule: the optimizer by name, parameter groups from timm and LR schedules.

Every parameter is in the optimizer from the start, in one group per backbone block (LR = ``lr ×
backbone_lr_scale``, times ``layer_decay ** depth_from_top`` with layer decay) plus the head's group at
``lr``; each group is split into weight-decay and no-decay (biases, norms, tokens) halves.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.model.backbone import backbone_blocks

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}

#: optimizers whose fused (single-kernel) implementation is used unless ``optimizer.kwargs.fused=false``
FUSED_BY_DEFAULT = frozenset({"adam", "adamw"})

SCHEDULERS = ("cosine", "constant")


def check_optimizer(name: str, lr: float, weight_decay: float, scheduler: str) -> None:
    """Raise ConfigError naming the bad ``optimizer.*`` value and a valid one."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name={name!r} is unknown; choose one of {sorted(OPTIMIZERS)}.")
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"optimizer.lr={lr} must be a positive number (e.g. 0.001).")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ConfigError(f"optimizer.weight_decay={weight_decay} must be ≥ 0 (e.g. 0.01, or 0 for none).")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"optimizer.scheduler={scheduler!r} is unknown; choose cosine or constant.")


def param_groups(
    model: nn.Module, backbone: nn.Module, blocks: list[list[str]], lr: float, weight_decay: float,
    backbone_lr_scale: float, layer_decay: float | None,
) -> list[dict[str, Any]]:
    """All parameters of ``model`` (head ``head.*``, backbone ``backbone.*``), grouped: the head, then each
    backbone block (top to bottom); layer decay uses timm's fine-grained ``group_matcher`` layers."""
    named = dict(model.named_parameters())
    skip = {"backbone." + n for n in getattr(backbone, "no_weight_decay", lambda: set())()}
    layers = (
        [["backbone." + n for n in b] for b in backbone_blocks(backbone, coarse=False)] if layer_decay is not None else blocks
    )
    scaled: list[tuple[str, list[str], float]] = [("head", [n for n in named if n.startswith("head.")], 1.0)]
    for depth, names in enumerate(reversed(layers)):
        decay = layer_decay**depth if layer_decay is not None else 1.0
        scaled.append((f"backbone.{len(layers) - 1 - depth}", names, backbone_lr_scale * decay))
    groups: list[dict[str, Any]] = []
    for name, names, scale in scaled:
        no_decay = [n for n in names if named[n].ndim <= 1 or n in skip]
        decay = [n for n in names if n not in no_decay]
        for suffix, members, wd in (("", decay, weight_decay), (".no_decay", no_decay, 0.0)):
            if members:
                groups.append(
                    {"name": name + suffix, "params": [named[n] for n in members], "lr": lr * scale, "lr_scale": scale,
                     "weight_decay": wd}
                )
    covered = sum(len(g["params"]) for g in groups)
    assert covered == len(named), f"param groups cover {covered} of {len(named)} parameters"
    return groups


def build_optimizer(
    name: str, groups: list[dict[str, Any]], lr: float, kwargs: dict[str, Any] | None, precision: Any
) -> torch.optim.Optimizer:
    """The optimizer over ``groups``; Adam(W) fused unless the config says otherwise or 16-bit AMP is on
    (its GradScaler: Lightning forbids gradient clipping with fused optimizers)."""
    options = dict(kwargs or {})
    if name in FUSED_BY_DEFAULT and "foreach" not in options and not str(precision).startswith("16"):
        options.setdefault("fused", True)  # one kernel for all tensors: about 2× faster steps on CPU than the loop
    return OPTIMIZERS[name](groups, lr=lr, **options)


def lr_schedule(scheduler: str, total_steps: int, warmup_steps: int) -> WarmupCosine | WarmupConstant:
    """The per-step LR multiplier for ``optimizer.scheduler``."""
    return WarmupCosine(total_steps, warmup_steps) if scheduler == "cosine" else WarmupConstant(warmup_steps)


class WarmupCosine:
    """Linear warm-up then cosine decay to zero (picklable, so checkpoints can hold it)."""

    def __init__(self, total: int, warmup: int) -> None:
        self.total, self.warmup = total, warmup

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class WarmupConstant:
    """Linear warm-up then a constant LR."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup

    def __call__(self, step: int) -> float:
        return (step + 1) / self.warmup if step < self.warmup else 1.0
