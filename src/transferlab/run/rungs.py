"""Multi-fidelity selection, the run's side: a rung stops a run partway through its own full-length schedule.

Successive halving (``hydra.sweeper.halving``, ``hydra_plugins.transferlab_grid.halving``) sets
``rung_fraction``: the run trains its planned epochs' schedule as always (the budget, the LR schedule, the
validation cadence are those of the full run: a rung never compresses a schedule), and stops after the
first *validated* epoch at or beyond that fraction of its planned epochs, with ``last.ckpt`` written
(``RungStop``). Its record says ``paused`` (``record.Status``), with the rung's epoch and score; a promoted
run resumes from there and trains no step twice; one the sweeper stops is marked ``pruned``.

A rung's score is the best monitored value over the validations up to the rung's epoch
(:func:`rung_score`): the same number whether read from a paused run or from the validation curve of a
run trained straight through (``record.val_curve``), so a promotion does not depend on how a run got there
(a rerun after a kill, another launcher, another ``n_jobs``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from transferlab.run.checkpoints import BestWeights, LastCheckpoint

log = logging.getLogger("transferlab")

#: the tolerance of "at or beyond the fraction" (fractions such as 1/9 arrive as decimals)
EPS = 1e-9


def rung_epoch(curve: Sequence[Sequence[float]], planned_epochs: int, fraction: float) -> int:
    """The epoch a rung at ``fraction`` of ``planned_epochs`` stops at: the first validated epoch of
    ``curve`` (``[[epoch, value], …]``, epochs counted from 1) at or beyond ``fraction × planned_epochs``;
    the planned epochs when no validation comes that late (the run then completes)."""
    target = float(fraction) * int(planned_epochs) - EPS
    return next((int(e) for e, _ in curve if e >= target), int(planned_epochs))


def rung_score(curve: Sequence[Sequence[float]], planned_epochs: int, fraction: float, mode: str = "max") -> float | None:
    """The best monitored value (``mode`` max or min) over the validations up to the rung's epoch; None
    when no validation came before it."""
    last = rung_epoch(curve, planned_epochs, fraction)
    values = [float(v) for e, v in curve if e <= last and v == v]  # NaN is never best
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


class RungStop(Callback):
    """Stops the run after the first validated epoch at or beyond ``fraction`` of its planned epochs (the
    Trainer's ``max_epochs``), ``last.ckpt`` written first (the promoted run resumes from it). ``stopped_at``
    is that epoch, else None (no fraction, or the run reached its planned epochs)."""

    def __init__(self, fraction: float | None, best: BestWeights, last: LastCheckpoint) -> None:
        self.fraction = None if fraction is None else float(fraction)
        self.best, self.last = best, last
        self.stopped_at: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # resumed at or past the rung (a sweep killed while this run trained on to a later rung, then rerun): stop
        # before any step, as the run that was not killed stopped there (measured: without this, the rerun trained
        # one epoch more than the uninterrupted sweep, tests/test_halving.py)
        done, planned = int(trainer.current_epoch), int(trainer.max_epochs or 0)
        target = (self.fraction or 0) * planned - EPS
        if self.fraction is not None and 0 < done < planned and any(e >= target for e, _ in self.best.curve) and done >= target:
            trainer.should_stop = True
            self.stopped_at = done
            log.info("rung at %g of the budget: already past it (epoch %d of %d), paused", self.fraction, done, planned)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning 2 validates before on_train_epoch_end: this epoch's validation is in the curve already
        done, planned = int(trainer.current_epoch) + 1, int(trainer.max_epochs or 0)
        if self.fraction is None or done >= planned or trainer.should_stop:
            return
        validated = bool(self.best.curve) and int(self.best.curve[-1][0]) == done
        if validated and done >= self.fraction * planned - EPS:
            self.last.save(trainer)  # before the stop: the checkpoint resumes at the next epoch
            trainer.should_stop = True
            self.stopped_at = done
            log.info("rung at %g of the budget: paused after epoch %d of %d", self.fraction, done, planned)


def rung_entry(fraction: float, epoch: int, score: float | None, by: str = "halving") -> dict[str, Any]:
    """The record's ``rung``: where a paused or pruned run stopped, its score there, and who stopped it."""
    return {"fraction": float(fraction), "epoch": int(epoch), "score": score, "by": by}
