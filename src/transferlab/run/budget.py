"""A run's budget: how many optimizer steps its training-set size gets (``cfg.budget``: ``by_size``, ``steps``
or ``epochs``), and how those steps are laid out as whole epochs (a tiny set's epochs packed into several passes)."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from transferlab.data.loaders import train_batch_size
from transferlab.errors import ConfigError


def budget_steps(budget: Any, n_train: int) -> int | None:
    """The optimizer steps a run of ``n_train`` examples gets under ``cfg.budget`` (None for rule ``epochs``).

    ``by_size``: the first row of ``budget.table`` whose ``below`` exceeds ``n_train`` (a null ``below``
    matches any size); ``steps``: ``budget.steps`` for every size.
    """
    rule = budget.get("rule", "epochs") if budget is not None else "epochs"
    if rule == "epochs":
        return None
    if rule == "steps":
        steps = budget.get("steps")
    elif rule == "by_size":
        steps = next((row["steps"] for row in budget.get("table") or [] if row.get("below") is None or n_train < int(row["below"])), None)
    else:
        raise ConfigError(f"budget.rule={rule!r} is unknown; choose by_size, steps or epochs (e.g. budget=by_size).")
    if steps is None or int(steps) < 1:
        raise ConfigError(f"budget (rule {rule}) gives {steps!r} steps for {n_train} training examples; give every size ≥ 1 step.")
    return int(steps)


def epoch_passes(cfg: DictConfig, n_train: int) -> int:
    """Passes over the training set in one epoch: with a step budget, enough for ``budget.epoch_steps``
    optimizer steps (a tiny set's epochs are packed; see ``data.sampler.EpochSampler``), else one."""
    budget = cfg.get("budget")
    steps = budget_steps(budget, n_train)
    if steps is None:
        return 1
    steps_per_pass = math.ceil(n_train / train_batch_size(cfg.dataset.batch_size, n_train))
    wanted = math.ceil(int(budget.get("epoch_steps") or 1) / steps_per_pass)
    return max(1, min(wanted, steps // steps_per_pass))  # never an epoch longer than the whole budget


def steps_per_epoch(cfg: DictConfig, n_train: int) -> int:
    """Optimizer steps in one epoch of a run of ``n_train`` examples (its passes, see :func:`epoch_passes`)."""
    return math.ceil(epoch_passes(cfg, n_train) * n_train / train_batch_size(cfg.dataset.batch_size, n_train))


def planned_epochs(cfg: DictConfig, n_train: int) -> int:
    """How many epochs the run trains: its budget's steps as whole epochs (at least one), or, with
    ``budget=epochs``, ``trainer.max_epochs`` raised so a small training set still gets ``min_train_steps``
    optimizer steps. (-1 or null epochs: no limit; a large number stands in.)
    """
    per_epoch = steps_per_epoch(cfg, n_train)
    steps = budget_steps(cfg.get("budget"), n_train)
    if steps is not None:
        return max(1, round(steps / per_epoch))
    max_epochs = cfg.trainer.get("max_epochs")
    if not max_epochs or int(max_epochs) < 0:
        return 10**6
    min_steps = int(cfg.get("min_train_steps") or 0)
    return max(int(max_epochs), math.ceil(min_steps / per_epoch)) if min_steps > 0 else int(max_epochs)
