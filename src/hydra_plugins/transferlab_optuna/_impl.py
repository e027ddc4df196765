"""The sweep over one Optuna study that many workers share (``sweeper.SharedOptunaSweeper``, which replaces
hydra-optuna-sweeper).

Measured on hydra-optuna-sweeper 1.3.0: it pins optuna<3, whose RDB storage fails with SQLAlchemy 2
(``AssertionError`` in ``get_current_version``) and which has no journal storage; a re-run asks for
``n_trials`` *more* trials, and a killed trial stays ``RUNNING`` forever. Here:

- the study lives in a storage (``transferlab.optuna_study.open_storage``; default a SQLite file in the sweep folder);
- a worker asks for trials until ``n_trials`` are done, counting every worker's trials, so a re-run of a
  killed sweep continues to ``n_trials`` and two workers on one storage complete it together;
- a trial whose worker is gone runs again with the same parameters, in the same folder (``study``);
- each trial's sampler is seeded from (``sampler.seed``, trial number): workers do not propose the same
  parameters, and a sweep run by one worker is reproducible;
- with a ``pruner`` (``transferlab.optuna_study``), the study keeps its config, each job gets its trial in
  ``optuna_trial`` and reports its validations to the storage, stopping when the pruner says so
  (``transferlab.run.pruning``); a job whose record says ``pruned`` ends its trial PRUNED, which counts
  towards ``n_trials``.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from hydra_plugins.transferlab_optuna import _space as space, _study as shared
from transferlab import optuna_study
from transferlab.data.sampler import derived_seed
from transferlab.errors import ConfigError
from transferlab.files import atomic_write
from transferlab.record import Status, read_record
from transferlab.run.context import job_output_dir

log = logging.getLogger(__name__)


class StudySweep:
    """The sweep of ``hydra/sweeper=optuna_study``; options in ``config.OptunaStudyConf``."""

    def __init__(self, sampler: Any, direction: str, study_name: str | None, storage: str | None, n_trials: int,
                 n_jobs: int, heartbeat_s: float, grace_s: float, poll_s: float, params: Any, pruner: Any = None) -> None:
        self.sampler_factory = sampler if callable(sampler) else functools.partial(optuna.samplers.TPESampler)
        self.direction, self.study_name, self.storage_spec = str(direction), study_name, storage
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.heartbeat_s, self.grace_s, self.poll_s = float(heartbeat_s), float(grace_s), float(poll_s)
        self.params = dict(params or {})
        self.me = shared.this_worker()
        # ``pruner`` comes built (Hydra instantiates nested ``_target_``s): its config, which the study keeps
        # and the jobs build again, is read from the sweep's config in ``_load``
        self.pruner: dict[str, Any] | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def sampler_for(self, number: int) -> optuna.samplers.BaseSampler:
        """The sampler of trial ``number``: the configured one, its seed mixed with the number."""
        base = getattr(self.sampler_factory, "keywords", {}).get("seed")
        if base is None:
            return self.sampler_factory()
        return self.sampler_factory(seed=derived_seed(int(base), int(number)) % 2**32)  # numpy's RandomState: < 2**32

    def sweep(self, arguments: list[str]) -> None:
        distributions, fixed = space.search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        name = self.study_name or "transferlab"
        study = self._load(name, sweep_dir)
        log.info("Optuna study %r in %s: %d of %d trials done", name, self.storage_spec or sweep_dir / "optuna.db",
                 sum(shared.is_done(t) for t in study.get_trials(deepcopy=False)), self.n_trials)
        while (batch := self._next_batch(study, distributions, fixed)) is not None:
            if not batch:  # the other workers run the remaining trials: wait for them, or for one to go stale
                time.sleep(self.poll_s)
                continue
            with shared.Heartbeat(self.storage, [t._trial_id for t, _ in batch], self.heartbeat_s):
                returns = self.launcher.launch([o for _, o in batch], initial_job_idx=batch[0][0].number)
            for (trial, _), ret in zip(batch, returns):
                _tell(study, trial, ret)
        self._write_results(study, sweep_dir)

    def _load(self, name: str, sweep_dir: Path) -> optuna.Study:
        """The study in its storage, with the sweep's pruner (checked first, then kept in the study, or
        found to be the one it has: ``optuna_study.keep_pruner``); a bad pruner is one line and exit code
        2, as the command line's own errors."""
        try:
            raw = OmegaConf.select(self.config, "hydra.sweeper.pruner", default=None)
            self.pruner = optuna_study.pruner_spec(OmegaConf.to_container(raw, resolve=True)
                                                   if OmegaConf.is_config(raw) else raw)
            pruner = optuna_study.build_pruner(self.pruner)
            self.url = shared.storage_url(self.storage_spec, sweep_dir)
            self.storage = optuna_study.open_storage(self.url)
            study = shared.load_study(self.storage, name, self.direction, self.sampler_for(-1), pruner)
            optuna_study.keep_pruner(study, self.pruner)
        except ConfigError as err:
            print(f"transferlab: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        return study

    def _next_batch(self, study: optuna.Study, distributions: dict[str, Any],
                    fixed: dict[str, str]) -> list[tuple[optuna.Trial, tuple[str, ...]]] | None:
        """Up to ``n_jobs`` trials for this worker; ``[]`` while others run the rest; None once all are done."""
        shared.retry_stale(study, self.storage, self.me, self.grace_s)
        trials = study.get_trials(deepcopy=False)
        done = sum(shared.is_done(t) for t in trials)
        if done >= self.n_trials:
            return None
        running = sum(t.state is TrialState.RUNNING and shared.counts(t) for t in trials)
        batch = []
        for _ in range(min(self.n_jobs, self.n_trials - done - running)):
            trial = study.ask()  # a queued retry first
            trial.set_user_attr(shared.WORKER, self.me)
            trial.set_user_attr(shared.ALIVE_AT, time.time())
            reason = shared.taken(study, trial, self.n_trials)
            if reason is not None:
                trial.set_user_attr(shared.NOT_COUNTED, reason)
                study.tell(trial, state=TrialState.FAIL)
                break
            study.sampler = self.sampler_for(trial.number)
            job = space.overrides(space.suggest(trial, distributions), fixed)
            if self.pruner is not None:  # the job reports to its trial (result-neutral: the folder keeps its name)
                job += (optuna_study.trial_override(self.url, study.study_name, trial.number),)
            batch.append((trial, job))
        return batch

    def _write_results(self, study: optuna.Study, sweep_dir: Path) -> None:
        """``optimization_results.yaml``: the best parameters and value (written atomically: workers race)."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            log.warning("no trial of study %r completed", study.study_name)
            return
        best = study.best_trial
        pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
        text = OmegaConf.to_yaml(OmegaConf.create({"name": "optuna", "best_params": best.params, "best_value": best.value,
                                                   "n_complete": len(complete), "n_pruned": pruned}))
        atomic_write(sweep_dir / "optimization_results.yaml", lambda f: f.write(text.encode()), mode=0o644)
        log.info("best value %s with %s (%d trials completed)", best.value, best.params, len(complete))


def _tell(study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> None:
    """The job's return value to the study; a job whose record says ``pruned`` prunes the trial (Optuna
    takes its last reported value); a failed job, or a NaN (the app's failed run), fails the trial."""
    if _pruned(ret):
        log.info("trial %d pruned", trial.number)
        study.tell(trial, state=TrialState.PRUNED)
        return
    try:
        value = float(ret.return_value)
    except Exception as err:  # noqa: BLE001 - any failure of the job fails this trial, not the sweep
        log.warning("trial %d failed: %s", trial.number, err)
        study.tell(trial, state=TrialState.FAIL)
        return
    if value != value:
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, value)


def _pruned(ret: JobReturn) -> bool:
    """Whether the job ended with its run pruned: its record (``result.json`` in its output folder) says so."""
    output_dir = job_output_dir(ret)
    if ret.status is not JobStatus.COMPLETED or output_dir is None:
        return False
    record = read_record(output_dir)
    return record is not None and record.status == Status.PRUNED
