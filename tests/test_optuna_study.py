"""The shared Optuna study (``hydra/sweeper=optuna_study``, ``sweep=optuna_lr``): a killed sweep re-run
reaches ``n_trials`` exactly without touching finished trials; two sweeper processes on one storage complete
``n_trials`` together, no trial run twice. Subprocesses with the basic launcher and a tiny backbone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from conftest import read_result
from test_sweeps import TINY, _env, _results, _train_cli

SWEEP = ["-m", "experiment=digits_transfer", "sweep=optuna_lr", "dataset.fraction=0.2", *TINY,
         "trainer.max_epochs=2", "min_train_steps=0", "logger=none"]
STUDY = "digits_transfer-optuna_lr"


def _sweep_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "digits_transfer" / "optuna_lr"


def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    if storage.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        store: object = JournalStorage(JournalFileBackend(storage[len("journal:"):]))
    else:
        store = storage
    return optuna.load_study(study_name=STUDY, storage=store).get_trials()


def _complete(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if t.state is optuna.trial.TrialState.COMPLETE]


def _completed(sweep_dir: Path) -> list[Path]:
    """The result.json files of completed trials (a trial's record says running from its start)."""
    return [p for p in sweep_dir.glob("*/result.json") if (read_result(p.parent) or {}).get("status") == "completed"]


def test_killed_optuna_sweep_rerun_reaches_n_trials_exactly(tmp_path: Path) -> None:
    args = [*SWEEP, "hydra.sweeper.n_trials=4"]
    sweep_dir = _sweep_dir(tmp_path)
    with open(tmp_path / "first.log", "w") as log_file:
        first = subprocess.Popen([sys.executable, "-m", "transferlab.train", *args], env=_env(tmp_path), cwd=tmp_path,
                                 stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while len(_completed(sweep_dir)) < 2:  # two trials done, the third one started
                assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the sweep did not finish two trials"
                time.sleep(0.05)
            while len([d for d in sweep_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]) < 3:
                assert time.monotonic() < deadline, "the third trial never started"
                time.sleep(0.05)
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=60)
    finished = {p: p.stat().st_mtime_ns for p in _completed(sweep_dir)}
    assert len(finished) == 2
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"  # the default storage, in the sweep folder
    assert len(_complete(_trials(storage))) == 2

    again = _train_cli(tmp_path, *args)
    trials = _trials(storage)
    complete = _complete(trials)
    assert len(complete) == 4, [(t.number, t.state, t.user_attrs) for t in trials]
    assert again.stdout.count("transferlab: done") == 2 and "already completed" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in finished} == finished, "a finished trial's record was rewritten"
    # the killed trial keeps its number, is not counted, and its parameters ran again (in its own folder)
    (killed,) = [t for t in trials if t.user_attrs.get("not_counted")]
    (retry,) = [t for t in complete if t.user_attrs.get("retry_of") == killed.number]
    assert retry.params == killed.params and killed.number == 2
    results = _results(sweep_dir)
    assert len(results) == 4 and all(r["status"] == "completed" for r in results.values())
    assert sorted(t.value for t in complete) == sorted(r["metrics"]["val/acc_best"] for r in results.values())


def two_workers(tmp_path: Path, sweep: list[str], n_trials: int) -> tuple[str, list[str]]:
    """Two sweeper processes at once on one journal storage (the shared-file-system storage); both must exit 0.
    Returns the storage and the two processes' output."""
    storage = f"journal:{tmp_path / 'shared' / 'study.journal'}"
    args = [sys.executable, "-m", "transferlab.train", *sweep, f"hydra.sweeper.n_trials={n_trials}",
            f"hydra.sweeper.storage={storage}", "hydra.sweeper.poll_s=0.5"]
    procs = [subprocess.Popen(args, env=_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outs]
    return storage, outs


def test_two_sweeper_processes_share_one_study(tmp_path: Path) -> None:
    storage, outs = two_workers(tmp_path, SWEEP, 6)
    trials = _trials(storage)
    complete = _complete(trials)
    assert len(complete) == 6, [(t.number, t.state, t.user_attrs) for t in trials]
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) == 2, f"one worker ran every trial: {workers}"
    # every trial ran once: six different parameter sets, six runs, nothing found already completed
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == 6
    assert sum(o.count("transferlab: done") for o in outs) == 6
    assert not any("already completed" in o for o in outs)
    results = _results(_sweep_dir(tmp_path))
    assert len(results) == 6 and all(r["status"] == "completed" for r in results.values())


@pytest.mark.parametrize("storage", [None, "journal:{tmp}/j/study.journal"])
def test_storage_choices(tmp_path: Path, storage: str | None) -> None:
    from hydra_plugins.transferlab_optuna._study import storage_url
    from transferlab.optuna_study import open_storage

    spec = storage.format(tmp=tmp_path) if storage else None
    store = open_storage(storage_url(spec, tmp_path / "sweep"))  # as the sweeper opens it
    study = optuna.create_study(storage=store, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(study.trials) == 2
    assert (tmp_path / "sweep" / "optuna.db").is_file() if storage is None else (tmp_path / "j" / "study.journal").is_file()
