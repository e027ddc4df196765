"""The shared study: its storage, which worker runs which trial, which trials count towards ``n_trials``,
and taking over the trials of a worker that is gone.

A worker is one sweeper process (``host:pid:start``). Each trial it runs carries its ``worker`` and an
``alive_at`` heartbeat (user attributes). A running trial whose worker process is gone (same host) or
whose heartbeat is older than ``grace_s`` (another host) is *stale*: it is marked ``not_counted`` and
failed, and its parameters are enqueued again (``retry_of``: the original number). The retry runs in the
same folder (folders are named by the parameters), so it resumes from that run's ``last.ckpt``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from transferlab import optuna_study

log = logging.getLogger(__name__)

WORKER, ALIVE_AT, RETRY_OF, NOT_COUNTED = "worker", "alive_at", "retry_of", "not_counted"
JOURNAL = optuna_study.JOURNAL


def storage_url(spec: str | None, sweep_dir: Path) -> str:
    """``null``: ``sqlite:///<sweep_dir>/optuna.db``; ``journal:<path>``: a journal file (its path made
    absolute: the jobs, which open it too, may run elsewhere); else an RDB URL as it is."""
    if not spec:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    if spec.startswith(JOURNAL):
        path = Path(spec[len(JOURNAL):]).expanduser().absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"{JOURNAL}{path}"
    return spec


def load_study(storage: BaseStorage, name: str, direction: str, sampler: optuna.samplers.BaseSampler,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """The study ``name`` in ``storage``, created by whichever worker comes first."""
    for _ in range(5):
        try:
            return optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                       pruner=pruner, load_if_exists=True)
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it between the check and the insert
            time.sleep(0.2)
    return optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (tells a reused pid apart), "" without /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def this_worker() -> str:
    """``host:pid:start`` of this sweeper process."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def worker_alive(worker: str) -> bool | None:
    """Whether the worker's process still runs: known on this host, None for another host."""
    host, _, rest = worker.partition(":")
    pid, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _start_ticks(int(pid)) == ticks


def counts(trial: FrozenTrial) -> bool:
    """Whether the trial takes one of the ``n_trials`` places (done, pruned, running or queued, not a stale one)."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state in (TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING) and not trial.user_attrs.get(NOT_COUNTED))


def is_done(trial: FrozenTrial) -> bool:
    return trial.state.is_finished() and counts(trial)


def is_stale(trial: FrozenTrial, me: str, grace_s: float, now: float) -> bool:
    """A running trial of another worker that is gone: its process ended, or its heartbeat stopped."""
    worker = trial.user_attrs.get(WORKER)
    if trial.state is not TrialState.RUNNING or worker == me:
        return False
    alive = worker_alive(worker) if worker else None
    if alive is not None:
        return not alive
    started = trial.datetime_start.timestamp() if trial.datetime_start else now
    return now - float(trial.user_attrs.get(ALIVE_AT, started)) > grace_s


def retry_stale(study: optuna.Study, storage: BaseStorage, me: str, grace_s: float) -> int:
    """Fail every stale trial (not counted) and enqueue its parameters again; how many were retried."""
    retried = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(trial, me, grace_s, time.time()):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, NOT_COUNTED, "worker gone")
            study.tell(trial.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # finished meanwhile, or another worker retried it first
        original = trial.user_attrs.get(RETRY_OF, trial.number)
        study.enqueue_trial(trial.params, user_attrs={RETRY_OF: original})
        log.info("trial %d: its worker %s is gone; its parameters run again", trial.number, trial.user_attrs.get(WORKER))
        retried += 1
    return retried


def taken(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> str | None:
    """Why this freshly asked trial must not run (None: it may): past ``n_trials`` (several workers asked at
    once), or a retry another worker already runs (two workers retried one stale trial)."""
    trials = study.get_trials(deepcopy=False)
    places = sorted(t.number for t in trials if counts(t))
    if trial.number not in places[:n_trials]:
        return f"past n_trials={n_trials}"
    original = trial.user_attrs.get(RETRY_OF)
    if original is not None and any(
        t.user_attrs.get(RETRY_OF) == original and t.number < trial.number and counts(t) for t in trials
    ):
        return f"trial {original} is already retried"
    return None


class Heartbeat:
    """Says every ``every_s`` seconds that this worker's running trials are alive (a thread, while launched)."""

    def __init__(self, storage: BaseStorage, trial_ids: list[int], every_s: float) -> None:
        self.storage, self.trial_ids, self.every_s = storage, trial_ids, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            for trial_id in self.trial_ids:
                try:
                    self.storage.set_trial_user_attr(trial_id, ALIVE_AT, time.time())
                except Exception as err:  # noqa: BLE001 - a missed beat is retried; the sweep goes on
                    log.warning("heartbeat of trial id %d failed: %s", trial_id, err)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
