"""The budget follows the data size: steps by training-set size, packed into whole epochs, the same for every strategy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_cfg
from transferlab.data.digits import digits_splits
from transferlab.data.sampler import EpochSampler
from transferlab.errors import ConfigError
from transferlab.run.lifecycle import train
from transferlab.run.source import source_config
from transferlab.run.budget import budget_steps, epoch_passes, planned_epochs

TABLE = {"rule": "by_size", "table": [{"below": 100, "steps": 100}, {"below": 1000, "steps": 200}, {"below": None, "steps": 500}]}


def test_by_size_takes_the_first_row_the_size_is_below() -> None:
    assert [budget_steps(TABLE, n) for n in (1, 99, 100, 999, 1000, 10**7)] == [100, 100, 200, 200, 500, 500]
    assert budget_steps({"rule": "steps", "steps": 7}, 10**5) == 7
    assert budget_steps({"rule": "epochs"}, 10) is None


@pytest.mark.parametrize(("budget", "pattern"), [
    ({"rule": "by_sise"}, r"budget.rule='by_sise' is unknown; choose by_size, steps or epochs"),
    ({"rule": "by_size", "table": [{"below": 10, "steps": 5}]}, r"gives None steps for 50 training examples"),
    ({"rule": "steps", "steps": 0}, r"gives 0 steps"),
])
def test_a_bad_budget_fails_with_the_fix(budget: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        budget_steps(budget, 50)


@pytest.mark.parametrize(("n", "passes", "epochs"), [(10, 10, 10), (40, 10, 10), (127, 5, 20), (377, 2, 17), (1259, 1, 25)])
def test_the_study_sizes_get_their_steps_in_packed_epochs(tmp_path: Path, n: int, passes: int, epochs: int) -> None:
    cfg = make_cfg(tmp_path, "budget=by_size", "dataset.batch_size=64")
    assert (epoch_passes(cfg, n), planned_epochs(cfg, n)) == (passes, epochs)
    steps = epochs * -(-passes * n // min(64, n))
    assert abs(steps - budget_steps(cfg.budget, n)) / budget_steps(cfg.budget, n) < 0.05


def test_the_target_budget_never_reaches_the_source_task(tmp_path: Path) -> None:
    """The source model trains ``source.max_epochs`` epochs whatever the target's budget (its cache key has no budget)."""
    cfg = make_cfg(tmp_path, "budget=by_size", "min_train_steps=10000", "source.max_epochs=8")
    src = source_config(cfg)
    assert planned_epochs(src, 2880) == 8
    assert planned_epochs(cfg, 2880) != 8  # the target run's own budget is steps by size


def test_a_packed_epoch_is_several_passes_each_a_permutation_and_pass_zero_is_unchanged() -> None:
    data = torch.utils.data.TensorDataset(torch.arange(10))
    one = list(EpochSampler(data, seed=3, epoch=2, reseed=False))
    packed = list(EpochSampler(data, seed=3, epoch=2, reseed=False, passes=4))
    assert len(packed) == 40 and packed[:10] == one
    assert all(sorted(packed[i:i + 10]) == list(range(10)) for i in range(0, 40, 10))
    assert len({tuple(packed[i:i + 10]) for i in range(0, 40, 10)}) == 4
    assert packed == list(EpochSampler(data, seed=3, epoch=2, reseed=False, passes=4))


def test_a_run_takes_its_budget_in_steps(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "backbone.name=test_resnet", "backbone.weights=null", "strategy=scratch", "dataset.per_class=2",
                   "budget=steps", "budget.steps=30")
    train(cfg, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["steps"] == 30 and record["epochs"] == 3  # 20 examples, one batch a pass, 10 passes an epoch


def test_digits_labels_keep_those_digits_as_classes_in_order() -> None:
    splits = digits_splits(labels=[7, 5, 6, 8, 9])
    full = digits_splits()
    assert splits.class_names == ["7", "5", "6", "8", "9"]
    assert set(np.unique(splits.train.labels)) == set(range(5))
    sevens = {full.train.images[i].tobytes() for i in np.flatnonzero(full.train.labels == 7)}
    sevens |= {s.images[i].tobytes() for s in (full.val, full.test) for i in np.flatnonzero(s.labels == 7)}
    assert all(splits.train.images[i].tobytes() in sevens for i in np.flatnonzero(splits.train.labels == 0))
    with pytest.raises(ConfigError, match=r"dataset.labels=\[5, 5\] must list two or more different digits"):
        digits_splits(labels=[5, 5])
