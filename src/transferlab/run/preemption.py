"""Preemption, requeue and time limits: the run stops between two training batches, ``last.ckpt`` holds its
last finished epoch, and the record says ``interrupted`` (not ``failed``).

Who owns requeue: the launcher's job runner, submitit (``hydra_plugins.transferlab_slurm``). SLURM sends
its ``USR2`` before the time limit or at preemption; submitit's handler checkpoints the job (resubmits it
as it was), runs ``scontrol requeue`` and exits. Run inside a Python signal handler, that exit would stop
training mid-step, before anything is saved. :class:`SignalStop` therefore defers it: the handler only
notes the signal; at the end of the current batch the run stops (under DDP every rank at the same batch),
``last.ckpt`` is written, the record says ``interrupted``, and then submitit's handler runs
(:meth:`RunInterrupted.hand_over`). Lightning's own SLURM requeue stays off (``auto_requeue=False``, in
``run.trainer``): two owners reacting to one signal requeue a job twice or lose it. SIGTERM (``scancel``,
``scontrol requeue``, the time limit itself) is Lightning's: it raises ``SIGTERMException`` between batches,
and the same checkpoint and record follow.

Exactness: the order and randomness of an epoch are fixed by (seed, epoch) (``data.sampler``), so a run
resumed from an end-of-epoch checkpoint equals the uninterrupted one. A signal in the middle of an epoch
that ends within ``signal_finish_epoch_s`` (30 s) lets it finish and saves its end: nothing is lost. In a
longer epoch the run stops after the current batch and saves the last finished epoch (``LastCheckpoint``
keeps the end of such long epochs in memory inside a SLURM job): the part of the epoch trained since is lost.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from transferlab.run.checkpoints import LastCheckpoint

log = logging.getLogger("transferlab")

#: the signal submitit asks SLURM for (``--signal=USR2@<signal_delay_s>``); submitit reads the same variable
PREEMPT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"


def requeue_signal() -> signal.Signals:
    """The launcher's preemption / time-limit signal: ``SIGUSR2`` unless ``$SUBMITIT_PREEMPT_SIGNAL`` says."""
    return signal.Signals[f"SIG{os.environ.get(PREEMPT_SIGNAL_ENV, 'USR2')}"]


def is_interruption(err: BaseException) -> bool:
    """Whether ``err`` stopped the run from outside (signal, requeue, Ctrl-C) rather than failed it.

    SystemExit covers :class:`RunInterrupted`, Lightning's ``SIGTERMException``, submitit's exit after a
    requeue and Lightning's exit after Ctrl-C; nothing in a run calls ``sys.exit`` itself.
    """
    return isinstance(err, (KeyboardInterrupt, SystemExit))


def describe_interruption(err: BaseException) -> str:
    """The record's ``error`` line for an interrupted run."""
    name = signal.Signals(err.signum).name if isinstance(err, RunInterrupted) else type(err).__name__
    return (f"interrupted ({name}: preempted, requeued, cancelled or at its time limit); it resumes from "
            "checkpoints/last.ckpt when requeued or run again")


class RunInterrupted(SystemExit):
    """The requeue signal stopped the run between two batches; ``last.ckpt`` holds its last finished epoch."""

    def __init__(self, signum: int, deferred: Any) -> None:
        super().__init__(128 + int(signum))
        self.signum, self.deferred = int(signum), deferred

    def hand_over(self) -> None:
        """Run the handler the signal was deferred from (submitit's: checkpoint the job, requeue, exit)."""
        if callable(self.deferred):
            self.deferred(self.signum, None)


class SignalStop(Callback):
    """Defers the launcher's requeue signal to a batch end, and saves ``last.ckpt`` when a signal (this one
    or SIGTERM) stops the run. Only installed where a handler is already there (a launcher that requeues);
    elsewhere the signal keeps its default.

    Where the signal finds the run: an epoch that ends within ``finish_epoch_s`` (estimated from its batches
    so far) is finished and its end written, which loses nothing; in a longer one the run stops after the
    current batch and writes the last finished epoch (``LastCheckpoint`` kept it in memory).
    """

    def __init__(self, last: LastCheckpoint, finish_epoch_s: float = 30.0) -> None:
        self.last, self.finish_epoch_s = last, float(finish_epoch_s)
        self.signum: int | None = None
        self._deferred: Any = None
        self._installed = False
        self._at_epoch_end = False
        self._epoch_started = time.monotonic()

    def _notice(self, signum: int, frame: Any) -> None:
        log.warning("received %s: stopping at the end of this batch or epoch, then requeue", signal.Signals(signum).name)
        self.signum = signum

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sig = requeue_signal()
        current = signal.getsignal(sig)
        if callable(current) and not self._installed:
            self._deferred, self._installed = current, True
            signal.signal(sig, self._notice)

    def close(self) -> None:
        """Give the signal back to the handler it was deferred from (after training and testing)."""
        if self._installed:
            signal.signal(requeue_signal(), self._deferred)
            self._installed = False

    def _stop(self) -> RunInterrupted:
        return RunInterrupted(self.signum or requeue_signal(), self._deferred)

    def _signalled(self, trainer: pl.Trainer) -> bool:
        """Whether a signal came (on any rank: every rank must stop at the same batch, or the others hang)."""
        stop = self.signum is not None
        return trainer.strategy.reduce_boolean_decision(stop, all=False) if trainer.world_size > 1 else stop

    def _epoch_left_s(self, trainer: pl.Trainer, batch_idx: int) -> float:
        """The rest of this epoch's training, estimated from its batches so far (rank 0's estimate)."""
        per_batch = (time.monotonic() - self._epoch_started) / (batch_idx + 1)
        left = per_batch * max(0.0, float(trainer.num_training_batches) - batch_idx - 1)
        return float(trainer.strategy.broadcast(left)) if trainer.world_size > 1 else left

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._installed or self._at_epoch_end or not self._signalled(trainer):
            return
        if self._epoch_left_s(trainer, batch_idx) <= self.finish_epoch_s:
            self._at_epoch_end = True  # finish this epoch: its end is then written, and nothing is lost
            return
        raise self._stop()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._installed and (self._at_epoch_end or self._signalled(trainer)):
            self.last.save(trainer)  # this epoch's end (LastCheckpoint, called before, may have skipped it)
            raise self._stop()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if is_interruption(exception):
            self.last.save_latest(trainer)
