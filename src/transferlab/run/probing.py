"""The probe solved instead of trained: which solver a run uses (checked before anything slow), and the
solve itself — L-BFGS on the cached features (``transferlab.probe``), the chosen head put into the
LightningModule, so that validation, test, checkpoints, ``result.json`` and W&B see it as any head."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import TensorDataset

from transferlab.config.plain import plain
from transferlab.errors import ConfigError
from transferlab.probe.search import ProbeFit, fit_probe
from transferlab.probe.solver import check_finite
from transferlab.strategies.base import FreezePolicy
from transferlab.strategies.solvable import SolvableHead


def _asked(node: Any) -> bool:
    """Whether a config option (``dataset.augment``, ``dataset.mixup``) asks for anything."""
    return bool(plain(node))


def lbfgs_obstacles(cfg: DictConfig, policy: SolvableHead) -> list[str]:
    """Why L-BFGS cannot solve this run's head (each reason says what to change); empty when it can."""
    reasons = []
    if not policy.cache_features:
        reasons.append("it solves the head on cached features, and strategy.cache_features=false. "
                       "Fix: strategy.cache_features=true, or strategy.solver=sgd.")
    if list(cfg.head.get("hidden") or []):
        reasons.append(f"it solves a linear head (logistic regression), and head={cfg.head.name} has hidden layers "
                       f"{list(cfg.head.hidden)}. Fix: head=linear, or strategy.solver=sgd.")
    elif float(cfg.head.get("dropout") or 0) > 0:
        reasons.append(f"head.dropout={cfg.head.dropout} is a regulariser of stochastic training; L-BFGS regularises "
                       "with its L2 strength. Fix: head.dropout=0, or strategy.solver=sgd.")
    if _asked(cfg.dataset.get("augment")) or _asked(cfg.dataset.get("mixup")):
        reasons.append("it solves on features extracted once, without augmentation, and dataset.augment / dataset.mixup "
                       "ask for augmented images. Fix: remove them, or strategy.solver=sgd strategy.cache_features=false.")
    return reasons


def resolve_solver(cfg: DictConfig, policy: FreezePolicy) -> None:
    """Have the policy decide ``strategy.solver`` (``auto``: lbfgs where nothing stands in its way) from this run's
    obstacles; ConfigError when ``lbfgs`` is asked for and cannot apply, or an option needs it."""
    if not isinstance(policy, SolvableHead):
        return
    policy.choose_solver(lbfgs_obstacles(cfg, policy))
    if policy.probe.class_weight is not None and not policy.solves_head:
        raise ConfigError(f"strategy.probe.class_weight={policy.probe.class_weight} applies to the L-BFGS probe, and this "
                          f"run trains its head with sgd. Fix: strategy.solver=lbfgs, or strategy.probe.class_weight=null.")
    if policy.solves_head and float(cfg.optimizer.get("label_smoothing") or 0) > 0:
        warnings.warn(f"optimizer.label_smoothing={cfg.optimizer.label_smoothing} does not apply to the L-BFGS probe "
                      "(plain cross-entropy); it applies to any epochs the Trainer runs.", stacklevel=2)


def solve_head(module: nn.Module, features: Mapping[str, TensorDataset], train_indices: np.ndarray, policy: SolvableHead,
               device: torch.device) -> ProbeFit:
    """Solve the head on the cached features of the run's training subset, chosen on the validation split,
    and load it into ``module.head``. The test features are checked, never used."""
    for split, data in features.items():
        check_finite(split, data.tensors[0])
    x, y = features["train"].tensors
    idx = torch.as_tensor(train_indices, dtype=torch.long)
    fit = fit_probe((x[idx], y[idx]), features["val"].tensors, module.choices.num_classes, policy.probe, device)
    linear = module.head[-1]
    with torch.no_grad():
        linear.weight.copy_(fit.weight.to(linear.weight))
        linear.bias.copy_(fit.bias.to(linear.bias))
    return fit


def wandb_entries(probe: Mapping[str, Any] | None) -> dict[str, Any]:
    """The probe's record as W&B summary entries (``probe/l2``, ``probe/curve``…)."""
    return {f"probe/{key}": value for key, value in (probe or {}).items()}
