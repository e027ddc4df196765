"""A run's trainer checked against this machine and against its budget, before anything slow.

A GPU trainer without a GPU and ``trainer.max_epochs=0`` are errors; more CPU training processes than
cores, and a strategy whose schedule the budget cuts short (``gradual`` milestones never reached,
``lp_ft`` with no epoch left to fine-tune) are warnings that name the fix.
"""

from __future__ import annotations

import math
import os
import warnings

import torch
from omegaconf import DictConfig

from transferlab.data.loaders import train_batch_size
from transferlab.errors import ConfigError
from transferlab.run.context import rank
from transferlab.run.budget import budget_steps, epoch_passes, planned_epochs
from transferlab.run.trainer import device_of
from transferlab.strategies.base import FreezePolicy


def has_gpu() -> bool:
    """Whether torch can use a GPU here (CUDA, or Apple's MPS)."""
    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps is not None and mps.is_available())


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_machine(cfg: DictConfig, fits: bool) -> None:
    """The trainer against this machine (and ``trainer.max_epochs`` against the budget, when the run fits
    anything: ``fits`` is false for a head solved on cached features, which trains no epoch)."""
    trainer = cfg.trainer
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda", "mps") and not has_gpu():
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu or ddp), but there is no GPU here that torch can use. "
            "Fix: trainer=cpu (or trainer=ddp_cpu for several processes), or run on a machine with a GPU."
        )
    by_epochs = (cfg.get("budget") or {}).get("rule", "epochs") == "epochs"
    if fits and by_epochs and trainer.get("max_epochs") == 0:
        raise ConfigError(
            "trainer.max_epochs=0 trains nothing: the run would test an untrained head and have no val/acc_best. "
            "Fix: trainer.max_epochs=10 (any number ≥ 1; -1 for no limit)."
        )
    devices, cores = trainer.get("devices"), cpu_cores()
    if device_of(cfg).type == "cpu" and isinstance(devices, int) and devices > cores and rank() == 0:
        warnings.warn(
            f"trainer.devices={devices} starts {devices} training processes on {cores} CPU core(s): they compete for "
            f"the cores, and the run is slower than with fewer. Fix: trainer.devices={cores} or fewer.",
            stacklevel=2,
        )


def _budget_words(cfg: DictConfig, n_train: int, needed: int) -> tuple[str, str]:
    """Where the run's epochs come from, and how to give it ``needed`` epochs."""
    steps = budget_steps(cfg.get("budget"), n_train)
    per_epoch = math.ceil(epoch_passes(cfg, n_train) * n_train / train_batch_size(cfg.dataset.batch_size, n_train))
    if steps is None:
        return f"trainer.max_epochs={cfg.trainer.get('max_epochs')}", f"trainer.max_epochs={needed}"
    rule = cfg.budget.rule
    where = "budget.steps" if rule == "steps" else f"the budget.table row for {n_train} training examples"
    return (f"budget={rule}: {steps} steps for {n_train} training examples, {per_epoch} per epoch",
            f"{where} ≥ {needed * per_epoch} steps")


def warn_schedule(cfg: DictConfig, policy: FreezePolicy, n_train: int) -> None:
    """Warn when the run's budget cuts the policy's schedule short (``FreezePolicy.schedule_shortfall``)."""
    epochs = planned_epochs(cfg, n_train)
    shortfall = policy.schedule_shortfall(epochs)
    if shortfall is None or rank() != 0:
        return
    problem, needed, alternative = shortfall
    source, more = _budget_words(cfg, n_train, needed)
    fix = more + (f", or {alternative}" if alternative else "")
    warnings.warn(f"{problem}, as the run trains {epochs} epoch(s) ({source}). Fix: {fix}.", stacklevel=2)
