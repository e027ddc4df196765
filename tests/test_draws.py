"""A seed is a draw: every seed trains on its own subset of the training split (nested across sizes within the
seed), every strategy at a seed on the same one; ``dataset.subset_seed`` fixes it; validation and test stay
fixed by ``dataset.split_seed``; the source task's training set never depends on a draw; ``source.seed`` can
follow the run's seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import ROOT, make_cfg
from transferlab.data.splits import draw_id
from transferlab.identity import config_hash
from transferlab.run.assembly import RunPlan, plan_run
from transferlab.run.source import source_config, source_weights_path

FRACTIONS = (0.01, 0.1, 0.3, 1.0)


def plan(tmp_path: Path, *overrides: str) -> RunPlan:
    return plan_run(make_cfg(tmp_path, *overrides))


def draws(tmp_path: Path, seed: int, *overrides: str) -> list[np.ndarray]:
    """The training indices of ``seed`` at each of :data:`FRACTIONS`."""
    return [plan(tmp_path, f"seed={seed}", f"dataset.fraction={f}", *overrides).train_indices for f in FRACTIONS]


def test_two_seeds_draw_different_subsets_nested_within_each_seed(tmp_path: Path) -> None:
    by_seed = {seed: draws(tmp_path, seed) for seed in (0, 1)}
    for subsets in by_seed.values():
        for small, large in zip(subsets, subsets[1:]):
            assert set(small) < set(large), "within a seed the smaller fraction lies inside the larger one"
    for small_0, small_1 in zip(by_seed[0][:-1], by_seed[1][:-1]):
        assert not np.array_equal(small_0, small_1), "another seed must draw other examples"
    assert np.array_equal(by_seed[0][-1], by_seed[1][-1])  # fraction 1.0: the whole training split at any seed


def test_validation_and_test_stay_fixed_across_seeds(tmp_path: Path) -> None:
    a, b = plan(tmp_path, "seed=0", "dataset.fraction=0.1"), plan(tmp_path, "seed=4", "dataset.fraction=0.1")
    for split in ("val", "test"):
        assert np.array_equal(getattr(a.splits, split).images, getattr(b.splits, split).images), split
    moved = plan(tmp_path, "seed=0", "dataset.fraction=0.1", "dataset.split_seed=1")
    assert not np.array_equal(moved.splits.val.images, a.splits.val.images)  # split_seed is what fixes them


@pytest.mark.parametrize("size", ["dataset.fraction=0.03", "dataset.per_class=2"])
def test_every_strategy_at_a_seed_trains_on_the_same_draw(tmp_path: Path, size: str) -> None:
    plans = [plan(tmp_path, "seed=3", size, f"strategy={s}") for s in ("scratch", "linear_probe", "finetune", "lp_ft")]
    for other in plans[1:]:
        assert np.array_equal(other.train_indices, plans[0].train_indices)
    assert {p.subset_seed for p in plans} == {3}


def test_subset_seed_fixes_the_draw_across_seeds(tmp_path: Path) -> None:
    fixed = [plan(tmp_path, f"seed={s}", "dataset.fraction=0.1", "dataset.subset_seed=7") for s in (0, 1, 2)]
    assert all(np.array_equal(p.train_indices, fixed[0].train_indices) for p in fixed)
    assert {p.subset_seed for p in fixed} == {7}
    assert np.array_equal(fixed[0].train_indices, plan(tmp_path, "seed=7", "dataset.fraction=0.1").train_indices)
    assert config_hash(make_cfg(tmp_path, "dataset.subset_seed=7"), None) != config_hash(make_cfg(tmp_path), None)


def test_a_draw_is_named_by_its_indices() -> None:
    idx = np.array([5, 1, 9])
    assert draw_id(idx) == draw_id(np.array([1, 5, 9])) and len(draw_id(idx)) == 12
    assert draw_id(idx) != draw_id(np.array([1, 5, 8]))


@pytest.mark.parametrize("overrides", [("seed=3",), ("source.seed=5",), ("source.dataset.subset_seed=5",), ("dataset.fraction=0.01",)])
def test_the_source_task_trains_on_its_whole_training_split(tmp_path: Path, overrides: tuple[str, ...]) -> None:
    """Whatever the run's seed, the source seed, a subset seed or the target's size: the same source training set."""
    src_cfg = source_config(make_cfg(tmp_path, *overrides))
    assert "subset_seed" not in src_cfg.dataset and src_cfg.dataset.fraction == 1.0
    src = plan_run(src_cfg)
    assert np.array_equal(src.train_indices, np.arange(len(src.splits.train)))


def test_the_source_seed_can_follow_the_run_seed(tmp_path: Path) -> None:
    """``source.seed=${seed}``: one source model per seed (its own cache file), shared by every strategy at that seed."""
    cache = tmp_path / "cache"

    def path(*overrides: str) -> Path:
        return source_weights_path(make_cfg(tmp_path, "backbone.weights=source", *overrides), cache)

    assert path("seed=1") == path("seed=0")  # the default: source.seed 0 for every seed
    follow = {s: path("source.seed=${seed}", f"seed={s}", f"strategy={st}") for s in (0, 1) for st in ("finetune", "linear_probe")}
    assert len(set(follow.values())) == 2
    assert path("source.seed=${seed}", "seed=1") == path("source.seed=1")
    assert source_config(make_cfg(tmp_path, "source.seed=${seed}", "seed=4")).seed == 4
    # a subset seed cannot change the source's weights, so it does not change their key either
    assert path("source.dataset.subset_seed=5") == path()
    # the two studies spread over source models: each seed its own (the measured reason is in their YAML)
    assert source_config(make_cfg(tmp_path, "experiment=digits_transfer", "seed=3")).seed == 3
    for study in ("digits_transfer", "digits_split_transfer"):
        raw = OmegaConf.to_container(OmegaConf.load(ROOT / "experiments" / f"{study}.yaml"), resolve=False)
        assert raw["source"]["seed"] == "${seed}"


def test_the_default_studies_run_five_draws() -> None:
    """``make study`` and ``make study-digits-split`` both run sweep=fair_x_fraction: 5 seeds, so 5 draws a size."""
    sweep = OmegaConf.load(ROOT / "sweeps" / "fair_x_fraction.yaml")
    assert str(sweep.hydra.sweeper.params.seed).split(",") == ["0", "1", "2", "3", "4"]
    study = (ROOT / "Makefile").read_text()
    assert "sweep=$(STUDY_SWEEP)" in study.split("define run_study", 1)[1].split("endef", 1)[0]
    assert "STUDY_SWEEP ?= fair_x_fraction\n" in study  # the default; fair_x_fraction_halving builds on it
    assert OmegaConf.load(ROOT / "sweeps" / "fair_x_fraction_halving.yaml").defaults == ["fair_x_fraction"]
    assert "$(call run_study,digits_transfer)" in study and "$(call run_study,digits_split_transfer)" in study
