"""The Optuna study that a sweep (``hydra/sweeper=optuna_study``, ``hydra_plugins.transferlab_optuna``) and its
jobs share: how its storage is opened, the pruner it names, and a job's handle on its own trial.

The sweeper keeps its pruner's config in the study (the user attribute ``PRUNER``), and each job it
launches with a pruner gets ``optuna_trial={storage, study, number}`` among its overrides (``trial_override``):
the job opens the same storage, builds the same pruner from the study (``pruner_of``), reports its
validations to its trial and asks that pruner whether to stop (``run.pruning``). So every worker and
every job judges by one pruner, whatever launcher runs them.

Optuna is the ``sweep`` extra: ``run.pruning`` imports this module only when a run has a trial.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

import optuna
from hydra.utils import instantiate
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from transferlab.errors import ConfigError

#: the study's user attribute that holds its pruner's config (``None``: it never prunes)
PRUNER = "pruner"
#: ``hydra.sweeper.pruner`` short names, as the configs they stand for (Optuna's defaults)
PRUNERS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "median": {"_target_": "optuna.pruners.MedianPruner"},
    "successive_halving": {"_target_": "optuna.pruners.SuccessiveHalvingPruner"},
    "hyperband": {"_target_": "optuna.pruners.HyperbandPruner"},
}
JOURNAL = "journal:"
#: the run's config key that names its trial (``identity.RESULT_NEUTRAL_KEYS``: it says where a run reports)
TRIAL_KEY = "optuna_trial"


def open_storage(url: str) -> BaseStorage:
    """``journal:<path>``: a journal file (a shared file system); ``sqlite:…``: SQLite, waiting up to 60 s
    for its lock (several workers and jobs write one file); else any Optuna RDB URL."""
    if url.startswith(JOURNAL):
        return JournalStorage(JournalFileBackend(url[len(JOURNAL):]))
    if url.startswith("sqlite:"):
        return RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return RDBStorage(url)


def pruner_spec(value: Any) -> dict[str, Any] | None:
    """``hydra.sweeper.pruner`` as a plain config: null or a short name (``PRUNERS``), or a mapping with
    ``_target_`` (``optuna.pruners.SuccessiveHalvingPruner`` and its arguments); None: no pruning."""
    if value is None:
        return None
    if isinstance(value, str):
        name = value.strip().lower()
        if name in PRUNERS:
            return PRUNERS[name]
        close = difflib.get_close_matches(name, list(PRUNERS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"hydra.sweeper.pruner={value!r} is not a pruner{hint}. Fix: hydra.sweeper.pruner="
                          f"{' | '.join(PRUNERS)}, or {{_target_: optuna.pruners.MedianPruner, n_startup_trials: 5}}")
    if isinstance(value, Mapping) and "_target_" in value:
        return {str(k): v for k, v in value.items() if k != "_partial_"}
    raise ConfigError(f"hydra.sweeper.pruner={value!r} is neither a short name nor a config with _target_. "
                      "Fix: hydra.sweeper.pruner=median, or {_target_: optuna.pruners.SuccessiveHalvingPruner}")


def build_pruner(spec: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    """The pruner of a spec (``pruner_spec``); ``NopPruner`` for None."""
    if spec is None:
        return optuna.pruners.NopPruner()
    pruner = instantiate(dict(spec))
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise ConfigError(f"hydra.sweeper.pruner: {spec.get('_target_')} is not an Optuna pruner. "
                          "Fix: a class of optuna.pruners (MedianPruner, SuccessiveHalvingPruner, HyperbandPruner)")
    return pruner


def keep_pruner(study: optuna.Study, spec: dict[str, Any] | None) -> None:
    """Write the sweep's pruner into the study, or check it is the one the study has: every trial of a
    study is judged by one pruner (a ConfigError names the two)."""
    attrs = study.user_attrs
    if PRUNER not in attrs:
        study.set_user_attr(PRUNER, spec)
        return
    if attrs[PRUNER] != spec:
        raise ConfigError(f"study {study.study_name!r} prunes with {attrs[PRUNER]}, this sweep says {spec}: every "
                          "trial of a study is judged by one pruner. Fix: the study's pruner in hydra.sweeper.pruner, "
                          "or a new study (hydra.sweeper.study_name=NAME)")


def trial_override(url: str, study_name: str, number: int) -> str:
    """The job override that names its trial: ``++optuna_trial={storage:'…',study:'…',number:N}``."""
    return f"++{TRIAL_KEY}={{storage:{_quoted(url)},study:{_quoted(study_name)},number:{int(number)}}}"


def _quoted(text: str) -> str:
    """``text`` as a single-quoted Hydra override string (a backslash is literal unless a quote or the end follows)."""
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), text) + "'"


def open_trial(address: Mapping[str, Any]) -> tuple[optuna.Trial, set[int]]:
    """The job's trial (``optuna_trial``: storage, study, number) in its study, with the pruner its sweep
    named (``keep_pruner``), and the steps already reported to it. Through the storage's public lookups;
    ``optuna.Trial``'s constructor is what ``Study.optimize`` uses (tests/test_optuna_pruning.py pins it)."""
    storage = open_storage(str(address["storage"]))
    name = str(address["study"])
    study_id = storage.get_study_id_from_name(name)
    pruner = build_pruner(storage.get_study_user_attrs(study_id).get(PRUNER))
    study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=0),
                              pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(address["number"]))
    return optuna.Trial(study, trial_id), set(storage.get_trial(trial_id).intermediate_values)
