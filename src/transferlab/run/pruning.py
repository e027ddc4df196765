"""Optuna's pruning, the run's side: a trial of ``hydra/sweeper=optuna_study`` reports its validations to the
study's storage and stops when the study's pruner says so.

The sweeper names the run's trial in its overrides (``optuna_trial={storage, study, number}``,
``transferlab.optuna_study``) when it prunes (``hydra.sweeper.pruner``). After each validated epoch
(``TrialPruning``, beside ``run.rungs.RungStop``) the run reports the monitored value at step = epochs
trained, every validation of its curve it has not reported yet (a retried trial resumed from
``last.ckpt`` reports its earlier ones too), then asks the pruner, which decides from whatever other
trials reported to the storage: no worker waits for another. A pruned run stops at that epoch: its
record says ``pruned`` with ``rung`` (by ``optuna``), its checkpoints are deleted (pruned for good), and
the sweeper tells Optuna the trial was PRUNED.

This mirrors optuna-integration's ``PyTorchLightningPruningCallback`` (no report during the sanity
check; under DDP rank 0 reports and decides, and every rank stops), except that the run is not Optuna's
objective function: it stops the Trainer instead of raising ``TrialPruned``. Storage trouble never fails
a run: one warning, and the run trains on, unpruned.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from transferlab.record import RunRecord, Status
from transferlab.run.checkpoints import BestWeights
from transferlab.run.rungs import rung_entry

log = logging.getLogger("transferlab")

#: who stopped a pruned run (the record's ``rung["by"]``)
BY = "optuna"


def _said(err: BaseException) -> str:
    """An error in one line (SQLAlchemy's add lines of background)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def open_trial(address: Mapping[str, Any] | None) -> tuple[Any, set[int]] | None:
    """The run's Optuna trial and the steps it has reported, or None: no trial named, or its storage
    cannot be reached (a warning; the run goes on unpruned)."""
    if address is None:
        return None
    try:
        # Optuna is the ``sweep`` extra (and 0.17 s to import): only a run that names a trial needs it
        from transferlab.optuna_study import open_trial as open_study_trial

        return open_study_trial(address)
    except Exception as err:  # noqa: BLE001 - the storage's trouble is never the run's failure
        warnings.warn(f"optuna_trial: cannot reach trial {address.get('number')} of study {address.get('study')!r} "
                      f"({_said(err)}); the run trains on, unpruned. Fix: leave optuna_trial to "
                      "hydra/sweeper=optuna_study, and its storage where every job can reach it", stacklevel=2)
        return None


def report_curve(trial: Any, reported: set[int], curve: list[list[float]]) -> None:
    """Report to ``trial`` every point of a validation curve (``[epochs, value]``) not reported yet (``reported``,
    updated); a NaN is left out: Optuna refuses it, and the run's own check fails such a run."""
    for epoch, value in curve:
        if int(epoch) not in reported and value == value:
            trial.report(float(value), step=int(epoch))
            reported.add(int(epoch))


class TrialPruning(Callback):
    """Reports each validated epoch's monitored value to the run's trial, then stops the run when the
    study's pruner says so (never after the last epoch: there is nothing left to save). ``pruned_at`` is
    the epoch it stopped after, else None. ``active``: a trial was named (every DDP rank asks rank 0)."""

    def __init__(self, address: Mapping[str, Any] | None, best: BestWeights, is_rank_zero: bool) -> None:
        self.active = address is not None
        opened = open_trial(address) if self.active and is_rank_zero else None
        self.trial, self.reported = opened if opened is not None else (None, set())
        self.best = best
        self.pruned_at: int | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning 2 validates before on_train_epoch_end: this epoch's validation is in the curve already
        done, planned = int(trainer.current_epoch) + 1, int(trainer.max_epochs or 0)
        if not self.active or not self.best.curve or int(self.best.curve[-1][0]) != done:
            return
        prune = self._report(ask=done < planned and not trainer.should_stop) if trainer.is_global_zero else False
        if bool(trainer.strategy.broadcast(prune)):
            trainer.should_stop = True
            self.pruned_at = done
            log.info("optuna pruned this trial after epoch %d of %d", done, planned)

    def _report(self, ask: bool) -> bool:
        """Report the curve's new points; whether the pruner says stop (``ask``: only before the last epoch)."""
        if self.trial is None:
            return False
        try:
            report_curve(self.trial, self.reported, self.best.curve)
            return ask and bool(self.trial.should_prune())
        except Exception as err:  # noqa: BLE001 - a storage that fails mid-run: warn once, train on
            warnings.warn(f"optuna trial {getattr(self.trial, 'number', '?')}: reporting failed ({_said(err)}); "
                          "the run trains on, unpruned. Fix: a storage every job can reach (journal:<path> "
                          "on a shared file system, or an RDB URL)", stacklevel=2)
            self.trial = None
            return False

    def mark(self, record: RunRecord, score: float | None, planned_epochs: int) -> None:
        """Write into ``record`` that the pruner stopped it: status ``pruned``, and where (``rung``)."""
        epoch = int(self.pruned_at or 0)
        record.status = Status.PRUNED
        record.rung = rung_entry(epoch / planned_epochs if planned_epochs else 1.0, epoch, score, by=BY)


def already_pruned(previous: RunRecord | None, cfg_hash: str, address: Mapping[str, Any] | None) -> bool:
    """Whether a trial's folder already holds this config's run pruned by Optuna (a retried or repeated
    trial: it is not trained again, its checkpoints are gone); a run without a trial trains in full."""
    return (address is not None and previous is not None and previous.config_hash == cfg_hash
            and previous.status == Status.PRUNED and (previous.rung or {}).get("by") == BY)


def report_recorded(address: Mapping[str, Any] | None, record: RunRecord) -> None:
    """A trial whose run is not trained again (completed, or pruned before: the sampler proposed the same
    parameters, or a retried trial) reports that run's recorded validations, so the study's pruner sees
    every trial's curve. Storage trouble: a warning."""
    opened = open_trial(address)
    if opened is None:
        return
    trial, reported = opened
    try:
        report_curve(trial, reported, record.val_curve or [])
    except Exception as err:  # noqa: BLE001 - as TrialPruning._report
        warnings.warn(f"optuna trial {trial.number}: reporting the recorded curve failed "
                      f"({_said(err)}). Fix: a storage every job can reach", stacklevel=2)
