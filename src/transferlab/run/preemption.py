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
therefore saves the state of the last finished epoch (``LastCheckpoint`` keeps it in memory inside a SLURM
job) and costs the part of the epoch trained since.
"""

from __future__ import annotations

import logging
import os
import signal
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
    """Defers the launcher's requeue signal to the end of the current batch, and saves ``last.ckpt`` when a
    signal (this one or SIGTERM) stops the run. Only installed where a handler is already there
    (a launcher that requeues); elsewhere the signal keeps its default."""

    def __init__(self, last: LastCheckpoint) -> None:
        self.last = last
        self.signum: int | None = None
        self._deferred: Any = None
        self._installed = False

    def _notice(self, signum: int, frame: Any) -> None:
        log.warning("received %s: stopping after this batch, then requeue", signal.Signals(signum).name)
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

    def _check(self, trainer: pl.Trainer) -> None:
        if not self._installed:
            return
        stop = self.signum is not None
        if trainer.world_size > 1:  # every rank stops at the same batch, or the others hang in the next all-reduce
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            raise RunInterrupted(self.signum or requeue_signal(), self._deferred)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._check(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._check(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if is_interruption(exception):
            self.last.save_latest(trainer)
