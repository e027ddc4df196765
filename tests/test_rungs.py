"""A rung stops a run partway through its own schedule, and a promoted run resumes losslessly (``run.rungs``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_cfg, read_result
from transferlab.errors import ConfigError
from transferlab.identity import config_hash
from transferlab.run.lifecycle import train
from transferlab.run.rungs import rung_epoch, rung_score

#: a run of 6 epochs with dropout in the head, so that any state lost or replayed at the rung shows
RUN = ["backbone.name=test_resnet", "backbone.weights=null", "strategy=finetune", "strategy.backbone_lr_scale=1",
       "optimizer.lr=0.01", "head=mlp", "head.dropout=0.2", "dataset.fraction=0.2", "dataset.batch_size=32",
       "trainer.max_epochs=6", "max_validations=3"]


def test_rung_epoch_is_the_first_validation_at_or_beyond_the_fraction() -> None:
    curve = [[2, 0.5], [4, 0.7], [6, 0.6]]  # validated every 2nd of 6 epochs
    assert rung_epoch(curve, 6, 1 / 3) == 2
    assert rung_epoch(curve, 6, 0.4) == 4  # 2.4 epochs: the next validation
    assert rung_epoch(curve, 6, 1.0) == 6
    assert rung_score(curve, 6, 0.4) == 0.7 and rung_score(curve, 6, 1.0) == 0.7
    assert rung_score(curve, 6, 1 / 3) == 0.5
    assert rung_score([[2, 0.5], [4, 0.3]], 6, 0.5, mode="min") == 0.3
    assert rung_score([], 6, 0.5) is None


def test_a_paused_run_resumes_to_the_straight_runs_numbers(tmp_path: Path, one_thread: None) -> None:
    straight = train(make_cfg(tmp_path, *RUN), tmp_path / "straight")
    out = tmp_path / "halved"
    at_rung = train(make_cfg(tmp_path, *RUN, "rung_fraction=0.4"), out)
    paused = read_result(out)
    assert paused is not None and paused["status"] == "paused"
    assert paused["rung"]["epoch"] == 4 and paused["epochs"] == 4 and paused["planned_epochs"] == 6
    assert (out / "checkpoints" / "last.ckpt").is_file()  # kept: the promotion resumes from it
    assert at_rung == {"val/acc_best": paused["rung"]["score"]} and "test/acc" not in paused["metrics"]
    # the same rung again: nothing trains (the record is as it was)
    assert train(make_cfg(tmp_path, *RUN, "rung_fraction=0.4"), out) == at_rung
    assert read_result(out)["train_time_s"] == paused["train_time_s"]
    # promoted to the whole budget: resumes at epoch 4, trains no step twice, ends where the straight run ended
    final = train(make_cfg(tmp_path, *RUN), out)
    done, reference = read_result(out), read_result(tmp_path / "straight")
    assert done["status"] == "completed" and done["resumed_from_epoch"] == 3  # Lightning's 0-based epoch 3 = 4 done
    assert final == straight and done["metrics"] == reference["metrics"]
    assert done["steps"] == reference["steps"] and done["val_curve"] == reference["val_curve"]
    assert done["config_hash"] == reference["config_hash"] == paused["config_hash"]
    assert done["train_time_s"] > paused["train_time_s"]  # both segments counted
    # the straight run's curve gives the rung score the paused run had: promotions do not depend on the path
    assert rung_score(reference["val_curve"], reference["planned_epochs"], 0.4) == paused["rung"]["score"]


def test_rung_fraction_is_checked_and_leaves_the_identity_alone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rung_fraction=1.5 must be in \(0, 1\]"):
        train(make_cfg(tmp_path, *RUN, "rung_fraction=1.5"), tmp_path / "bad")
    assert read_result(tmp_path / "bad") is None  # checked before anything is written
    assert config_hash(make_cfg(tmp_path, *RUN, "rung_fraction=0.5"), "d") == config_hash(make_cfg(tmp_path, *RUN), "d")


def test_a_run_resumed_past_its_rung_stops_before_any_step(tmp_path: Path, one_thread: None) -> None:
    """A sweep killed while this run trained on to a later rung, rerun: the earlier rung finds it past there."""
    out = tmp_path / "run"
    train(make_cfg(tmp_path, *RUN, "rung_fraction=0.6", "checkpoint_every_s=0"), out)  # validations at 2, 4, 6
    later = read_result(out)
    assert later["status"] == "paused" and later["epochs"] == 4
    later["status"] = "running"  # what a SIGKILL leaves: the record of the run it had started
    (out / "result.json").write_text(json.dumps(later))
    train(make_cfg(tmp_path, *RUN, "rung_fraction=0.3"), out)  # rung epoch 2: it is at 4 already
    again = read_result(out)
    assert again["status"] == "paused" and again["epochs"] == 4 and again["steps"] == later["steps"]
    assert rung_score(again["val_curve"], 6, 0.3) == rung_score(later["val_curve"], 6, 0.3)
