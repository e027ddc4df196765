"""Pruning in the shared Optuna study (``hydra.sweeper.pruner``, ``run.pruning``): a job reports each validation to
its trial in the storage and stops when the study's pruner says so; the trial ends PRUNED, its record ``pruned``,
and it counts towards ``n_trials``. Subprocesses with the basic launcher and a tiny backbone, as
tests/test_optuna_study.py.

The grid: ``optimizer.lr`` is 0.01 or 1e-7, drawn per trial by a seeded random sampler (the draws depend on the
trial's number only, whichever worker asks): with seed 0, trials 0-4 draw 1e-7, 0.01, 0.01, 1e-7, 0.01. A repeated
draw is not trained again (its folder holds the run): it reports that run's curve to its own trial, and ends as it
did (pruned or complete). Measured on this config (4 epochs, validated every epoch):
lr=0.01 reaches val/acc 0.23, 0.41, 0.54, 0.55; lr=1e-7 stays at chance, 0.10, 0.09, 0.11, 0.11. A
ThresholdPruner at 0.2 from step 2 prunes every 1e-7 trial after its 2nd epoch and never a 0.01 one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import make_cfg, read_result
from test_optuna_study import STUDY, _sweep_dir, _trials, two_workers
from test_sweeps import TINY, _env, _results, _train_cli
from transferlab.errors import ConfigError
from transferlab.identity import config_hash
from transferlab.optuna_study import keep_pruner, pruner_spec, trial_override
from transferlab.run.checkpoints import BestWeights
from transferlab.run.lifecycle import train
from transferlab.run.pruning import TrialPruning

GOOD, BAD = 0.01, 1e-07  # the folders say optimizer.lr=0.01 and optimizer.lr=1e-07
SWEEP = ["-m", "experiment=digits_transfer", "sweep=optuna_lr", "dataset.fraction=0.2", *TINY,
         "trainer.max_epochs=4", "max_validations=null", "min_train_steps=0", "logger=none",
         f"optimizer.lr=choice({GOOD},{BAD})", "optimizer.weight_decay=0", "strategy.backbone_lr_scale=1",
         "hydra.sweeper.sampler._target_=optuna.samplers.RandomSampler",
         "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:0.2,n_warmup_steps:2}"]


def _by_state(trials: list[optuna.trial.FrozenTrial]) -> dict[str, list[optuna.trial.FrozenTrial]]:
    return {state: [t for t in trials if t.state is getattr(TrialState, state)] for state in ("COMPLETE", "PRUNED")}


def _check_pruned_and_completed(trials: list[optuna.trial.FrozenTrial], sweep_dir: Path) -> None:
    """Every 1e-7 trial pruned after epoch 2 (record ``pruned``, its checkpoints gone), every 0.01 one complete."""
    by = _by_state(trials)
    assert by["PRUNED"] and by["COMPLETE"], [(t.number, t.state, t.params) for t in trials]
    assert {t.params["optimizer.lr"] for t in by["PRUNED"]} == {BAD}
    assert {t.params["optimizer.lr"] for t in by["COMPLETE"]} == {GOOD}
    results = _results(sweep_dir)
    assert all("optuna_trial" not in name for name in results)  # the trial never names a folder
    for trial in by["PRUNED"]:
        (name,) = [n for n in results if f"optimizer.lr={BAD}" in n]
        record = results[name]
        assert record["status"] == "pruned" and record["planned_epochs"] == 4
        assert record["rung"] == {"fraction": 0.5, "epoch": 2, "score": record["metrics"]["val/acc_best"], "by": "optuna"}
        assert record["epochs"] == 2 and record["steps"] > 0 and record["train_time_s"] > 0
        # what the job reported is its validation curve (Optuna's Trial, opened by number, reports to this trial)
        assert trial.intermediate_values == {int(e): v for e, v in record["val_curve"]}
        assert trial.value == record["val_curve"][-1][1]  # Optuna's value of a pruned trial: its last report
        assert not (sweep_dir / name / "checkpoints").exists()
    for trial in by["COMPLETE"]:
        (name,) = [n for n in results if f"optimizer.lr={GOOD}" in n]
        assert results[name]["status"] == "completed" and sorted(trial.intermediate_values) == [1, 2, 3, 4]


def test_two_workers_prune_the_bad_trials_on_one_storage(tmp_path: Path) -> None:
    storage, outs = two_workers(tmp_path, SWEEP, 4)
    trials = _trials(storage)
    assert len(trials) == 4, [(t.number, t.state, t.user_attrs) for t in trials]
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "one worker ran every trial"
    _check_pruned_and_completed(trials, _sweep_dir(tmp_path))
    assert sum("optuna pruned this trial after epoch 2 of 4" in o for o in outs) >= 1


def test_a_rerun_continues_the_study_pruned_trials_counted(tmp_path: Path) -> None:
    args = SWEEP
    sweep_dir = _sweep_dir(tmp_path)
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    _train_cli(tmp_path, *args, "hydra.sweeper.n_trials=3")
    first = _trials(storage)
    assert len(first) == 3 and _by_state(first)["PRUNED"], [(t.number, t.state, t.params) for t in first]
    again = _train_cli(tmp_path, *args, "hydra.sweeper.n_trials=3")  # done: a pruned trial counts
    assert "transferlab: done" not in again.stdout and len(_trials(storage)) == 3
    more = _train_cli(tmp_path, *args, "hydra.sweeper.n_trials=5")  # continued to 5, trials 3 and 4
    trials = _trials(storage)
    assert len(trials) == 5 and [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert more.stdout.count("transferlab: done") == 2
    assert [(t.state, t.params) for t in trials[:3]] == [(t.state, t.params) for t in first]
    _check_pruned_and_completed(trials, sweep_dir)
    assert (sweep_dir / "optimization_results.yaml").read_text().count("n_pruned") == 1


@pytest.mark.slow  # 17 s, for CI's 15 minutes: tests/test_optuna_study.py runs studies without a pruner in CI
def test_no_pruner_adds_no_trial_and_a_changed_pruner_is_refused(tmp_path: Path) -> None:
    sweep = [a for a in SWEEP if not a.startswith("hydra.sweeper.pruner")]
    _train_cli(tmp_path, *sweep, "hydra.sweeper.n_trials=1", "trainer.max_epochs=1")
    (trial,) = _trials(f"sqlite:///{_sweep_dir(tmp_path) / 'optuna.db'}")
    assert trial.state is TrialState.COMPLETE and trial.intermediate_values == {}  # no trial named: no report
    (name,) = _results(_sweep_dir(tmp_path))
    assert "optuna_trial" not in (_sweep_dir(tmp_path) / name / ".hydra" / "overrides.yaml").read_text()
    changed = subprocess.run([sys.executable, "-m", "transferlab.train", *SWEEP, "hydra.sweeper.n_trials=2"],
                             env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert f"study {STUDY!r} prunes with None, this sweep says" in changed.stderr and "Fix:" in changed.stderr


def test_pruner_names_and_configs() -> None:
    assert pruner_spec(None) is None and pruner_spec("none") is None
    assert pruner_spec("median") == {"_target_": "optuna.pruners.MedianPruner"}
    assert pruner_spec({"_target_": "optuna.pruners.SuccessiveHalvingPruner", "_partial_": True, "reduction_factor": 3}) == {
        "_target_": "optuna.pruners.SuccessiveHalvingPruner", "reduction_factor": 3}
    with pytest.raises(ConfigError, match=r"hydra.sweeper.pruner='medain' is not a pruner \(did you mean median\?\)"):
        pruner_spec("medain")
    study = optuna.create_study()
    keep_pruner(study, pruner_spec("hyperband"))
    keep_pruner(study, pruner_spec("hyperband"))  # the same again: fine
    with pytest.raises(ConfigError, match="judged by one pruner"):
        keep_pruner(study, pruner_spec("median"))


def test_storage_trouble_leaves_the_run_unpruned(tmp_path: Path, one_thread: None) -> None:
    address = trial_override(f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'optuna.db'}", "gone", 0)
    run = ["backbone.name=test_resnet", "backbone.weights=null", "strategy=finetune", "dataset.fraction=0.2"]
    with pytest.warns(UserWarning, match="cannot reach trial 0 of study 'gone'.*the run trains on, unpruned"):
        train(make_cfg(tmp_path, *run, address), tmp_path / "run")
    assert read_result(tmp_path / "run")["status"] == "completed"
    assert config_hash(make_cfg(tmp_path, *run, address), "d") == config_hash(make_cfg(tmp_path, *run), "d")

    class FailingTrial:  # a storage that fails mid-run: one warning, then no more reports
        number, calls = 7, 0

        def report(self, value: float, step: int) -> None:
            FailingTrial.calls += 1
            raise OSError("database is locked")

    pruning = TrialPruning(None, BestWeights("val/acc"), is_rank_zero=True)
    pruning.trial, pruning.best.curve = FailingTrial(), [[1, 0.5]]
    with pytest.warns(UserWarning, match="optuna trial 7: reporting failed .*database is locked.*unpruned") as said:
        assert pruning._report(ask=True) is False and pruning._report(ask=True) is False
    assert FailingTrial.calls == 1 and pruning.trial is None and len(said) == 1


def test_a_resumed_trial_reports_its_whole_curve_and_a_pruned_one_never_trains_again(tmp_path: Path, one_thread: None) -> None:
    """In process, no sweeper: a run stopped after epoch 1 (a rung, as a killed trial's last.ckpt) resumes under
    another trial number, reports epoch 1 from its restored curve and epoch 2, and is pruned there; a third trial
    of the same parameters trains nothing and reports the pruned run's curve."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    keep_pruner(study, pruner_spec({"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.2, "n_warmup_steps": 2}))
    trials = [study.ask() for _ in range(3)]
    run = ["backbone.name=test_resnet", "backbone.weights=null", "strategy=finetune", "strategy.backbone_lr_scale=1",
           "dataset.fraction=0.2", f"optimizer.lr={BAD}", "optimizer.weight_decay=0", "trainer.max_epochs=4",
           "max_validations=null"]
    out = tmp_path / "run"
    train(make_cfg(tmp_path, *run, "rung_fraction=0.25"), out)  # stops after epoch 1, last.ckpt kept
    first = read_result(out)
    assert first["status"] == "paused" and first["epochs"] == 1
    train(make_cfg(tmp_path, *run, trial_override(url, "s", trials[1].number)), out)
    pruned = read_result(out)
    assert pruned["status"] == "pruned" and pruned["resumed_from_epoch"] == 0  # Lightning's epoch 0: 1 done
    assert pruned["rung"]["epoch"] == 2 and pruned["epochs"] == 2 and pruned["train_time_s"] > first["train_time_s"]
    assert not (out / "checkpoints").exists()
    reported = optuna.load_study(study_name="s", storage=url).trials
    curve = {int(e): v for e, v in pruned["val_curve"]}
    assert sorted(curve) == [1, 2] and reported[1].intermediate_values == curve
    assert reported[0].intermediate_values == {}  # the rung's run named no trial
    again = train(make_cfg(tmp_path, *run, trial_override(url, "s", trials[2].number)), out)
    assert again == pruned["metrics"] and read_result(out) == pruned  # not trained again
    assert optuna.load_study(study_name="s", storage=url).trials[2].intermediate_values == curve


def test_a_run_imports_optuna_only_when_it_names_a_trial() -> None:
    """Optuna is the ``sweep`` extra (and 0.17 s): the command and a run without a trial never import it."""
    code = "import sys, transferlab.train, transferlab.run.pruning; assert 'optuna' not in sys.modules, 'optuna imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
