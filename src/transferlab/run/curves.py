"""The curves a run logs besides its metrics, and their x-axes on W&B.

- The LR of every parameter group at every logged step: Lightning's ``LearningRateMonitor``, as
  ``lr/head``, ``lr/backbone.3``, … (``model.module`` names the scheduler, ``model.optim`` the groups).
  How often a step is logged is ``run.trainer.log_interval``'s: every optimizer step in a short run.
- The trainable parameters at the start of every epoch (the freeze policy logs them, ``strategies.base``).
- The x-axes (W&B ``define_metric``): optimizer steps (``trainer/global_step``, which Lightning's
  WandbLogger defines for every key with the glob ``*``) for the per-step keys, and ``epoch`` for the
  per-epoch keys: validation metrics, epoch means of training metrics, parameter counts. Those are defined
  by exact name, since W&B matches a key against its globs in no fixed order (a second glob such as
  ``val/*`` would win or lose at random against ``*``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, LearningRateMonitor
from pytorch_lightning.loggers import WandbLogger

from transferlab.strategies.base import PARAMETER_CURVES

log = logging.getLogger(__name__)

#: the x-axis of the per-epoch keys (Lightning logs it with every row)
EPOCH = "epoch"


def define_epoch_axis(run: Any, names: Sequence[str]) -> None:
    """Plot ``names`` against ``epoch`` on the W&B ``run`` (``epoch`` itself against W&B's own step). W&B
    trouble is a warning."""
    try:
        run.define_metric(EPOCH)
        for name in names:
            run.define_metric(name, step_metric=EPOCH)
    except Exception as err:  # noqa: BLE001 - tracking must never stop a run
        log.warning("W&B: could not define the epoch axis (%s).", err)


class EpochAxis(Callback):
    """Defines the epoch x-axis of the module's per-epoch keys and the policy's parameter counts on every
    W&B logger, before anything is logged."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        names = [*pl_module.epoch_metric_names(), *PARAMETER_CURVES]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                define_epoch_axis(logger.experiment, names)


def curve_callbacks(logger: Any) -> list[Callback]:
    """The callbacks behind the curves; none without a logger (Lightning's LR monitor needs one)."""
    if logger is None:
        return []
    return [LearningRateMonitor(logging_interval="step"), EpochAxis()]
