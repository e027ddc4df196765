"""Tuning grids: per-strategy grids expand into independent jobs that every launcher runs and a re-run resumes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import ROOT
from test_sweeps import TINY, _env, _train_cli
from transferlab.errors import ConfigError
from transferlab.grid import expand_jobs, grid_points

GRIDS = {
    "scratch": {"optimizer.lr": "0.001,0.01"},
    "finetune": [{"optimizer.lr": 0.001, "strategy.backbone_lr_scale": 1.0}, {"optimizer.lr": 0.003, "strategy.backbone_lr_scale": 0.1}],
    "linear_probe": {},
}
KNOWN = ["scratch", "finetune", "linear_probe", "lp_ft"]


def test_each_strategy_gets_its_own_grid_times_the_shared_axes() -> None:
    jobs = expand_jobs({"strategy": ["scratch", "finetune", "linear_probe"], "seed": ["0", "1"]}, GRIDS, KNOWN)
    assert len(jobs) == (2 + 2 + 1) * 2
    assert ["strategy=scratch", "optimizer.lr=0.01", "seed=1"] in jobs
    assert ["strategy=finetune", "optimizer.lr=0.003", "strategy.backbone_lr_scale=0.1", "seed=0"] in jobs
    assert ["strategy=linear_probe", "seed=0"] in jobs
    assert not any("strategy.backbone_lr_scale" in " ".join(j) for j in jobs if j[0] == "strategy=scratch")


def test_the_command_line_narrows_strategies_and_grid_values() -> None:
    jobs = expand_jobs({"strategy": ["scratch"], "optimizer.lr": ["0.003"]}, GRIDS, KNOWN)
    assert jobs == [["strategy=scratch", "optimizer.lr=0.003"]]  # the two grid LRs collapse into the given one
    assert len(expand_jobs({}, GRIDS, KNOWN)) == 5  # no strategy axis: every strategy with a grid


def test_grid_points_cartesian_and_lists() -> None:
    assert grid_points("s", {"a": "1,2", "b": [3, 4]}) == [{"a": "1", "b": "3"}, {"a": "1", "b": "4"}, {"a": "2", "b": "3"}, {"a": "2", "b": "4"}]
    assert grid_points("s", {}) == [{}]
    with pytest.raises(ConfigError, match=r"grids.s=.*give a mapping"):
        grid_points("s", "nonsense")


@pytest.mark.parametrize(
    ("axes", "grids", "pattern"),
    [
        ({"strategy": ["scratch"]}, {"scratch": {"optimizer.lr": "0.001,-0.01"}}, r"optimizer.lr=-0.01 is not a positive number"),
        ({"strategy": ["finetune"]}, {"finetune": {"strategy.backbone_lr_scale": "0,1"}}, r"backbone_lr_scale=0 is not a positive"),
        ({"strategy": ["lp_ft"]}, GRIDS, r"strategy=lp_ft has no tuning grid in this sweep.*add hydra.sweeper.grids.lp_ft"),
        ({}, {"finetuen": {}}, r"grids.finetuen: there is no strategy 'finetuen'. Did you mean finetune"),
    ],
)
def test_bad_grids_fail_with_the_fix(axes: dict, grids: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        expand_jobs(axes, grids, KNOWN)


FAIR = ["-m", "experiment=digits_transfer", "sweep=fair_x_fraction", "strategy=scratch,linear_probe", "dataset.fraction=0.05",
        "seed=0", *TINY, "budget=steps", "budget.steps=2", "logger=none"]


def _fair_grids() -> dict:
    return OmegaConf.to_container(OmegaConf.load(ROOT / "sweeps" / "fair_x_fraction.yaml").hydra.sweeper.grids)


def _records(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")}


# local (submitit, a process per job) is slow-marked for CI's time: 71 s against joblib's 31 s, and
# tests/test_sweeps.py runs submitit-local in CI already
# both slow-marked for CI's 15 minutes (joblib 31 s, local 71 s, measured): the grid sweeper's jobs under joblib,
# a kill and a rerun that skips what completed run in CI in tests/test_halving.py and tests/test_sweeps.py
@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "local"])
def test_the_grid_runs_as_independent_jobs_and_resumes(tmp_path: Path, launcher: str) -> None:
    args = [*FAIR, f"hydra/launcher={launcher}", *(["hydra.launcher.n_jobs=2"] if launcher == "joblib" else [])]
    sweep_dir = tmp_path / "runs" / "digits_transfer" / "fair_x_fraction"
    first = _train_cli(tmp_path, *args, OMP_NUM_THREADS="1")
    records = _records(sweep_dir)
    scratch_lrs = [float(v) for v in str(_fair_grids()["scratch"]["optimizer.lr"]).split(",")]  # the study's grid
    assert len(scratch_lrs) >= 3
    assert len(records) == len(scratch_lrs) + 1 and all(r["status"] == "completed" for r in records.values()), first.stdout[-2000:]
    assert sorted(r["hparams"]["optimizer.lr"] for r in records.values() if r["strategy"] == "scratch") == sorted(scratch_lrs)
    assert f"multirun of {len(scratch_lrs) + 1} jobs" in first.stdout
    lost = next(name for name, r in records.items() if r["hparams"]["optimizer.lr"] == 0.01)
    (sweep_dir / lost / "result.json").unlink()
    again = _train_cli(tmp_path, *args, OMP_NUM_THREADS="1")
    assert set(_records(sweep_dir)) == set(records)
    log = again.stdout + again.stderr + "".join(p.read_text() for p in sweep_dir.rglob("*.log") if p.is_file())
    skipped = set(re.findall(r"already completed \(config \w+\): (.*?)/result.json", log))
    assert skipped == {str(sweep_dir / name) for name in records if name != lost}, log[-3000:]


BAD_SWEEP = """# @package _global_
defaults:
  - override /hydra/sweeper: transferlab_grid
sweep_name: bad_grid
hydra:
  sweeper:
    params: {strategy: scratch, seed: 0}
    grids:
      scratch: {optimizer.lr: "-0.001,0.01"}
"""


def test_a_bad_grid_fails_before_any_job_runs(tmp_path: Path) -> None:
    (tmp_path / "extra" / "sweep").mkdir(parents=True)
    (tmp_path / "extra" / "sweep" / "bad_grid.yaml").write_text(BAD_SWEEP)
    args = ["-m", "experiment=digits_transfer", "sweep=bad_grid", *TINY, f"hydra.searchpath=[file://{tmp_path / 'extra'}]"]
    proc = subprocess.run([sys.executable, "-m", "transferlab.train", *args],
                          env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "optimizer.lr=-0.001 is not a positive number" in proc.stderr + proc.stdout
    assert not list((tmp_path / "runs").rglob("result.json"))


def test_the_fair_sweep_tunes_lora_and_bitfit_and_make_study_peft_runs_them() -> None:
    """LoRA (LR × rank) and BitFit (LR) get their grids in the fair sweep; ``make study`` still runs its three
    strategies, ``make study-peft`` the same sweep with the two added (so the three's completed runs are skipped)."""
    from omegaconf import OmegaConf

    from transferlab.strategies.registry import POLICIES

    root = Path(__file__).resolve().parents[1]
    sweeper = OmegaConf.to_container(OmegaConf.load(root / "sweeps" / "fair_x_fraction.yaml").hydra.sweeper)
    assert sweeper["params"]["strategy"] == "scratch,linear_probe,finetune"
    axes = {"strategy": ["lora", "bitfit"], "dataset.fraction": ["0.01", "1.0"], "seed": ["0", "1", "2", "3", "4"]}
    jobs = expand_jobs(axes, sweeper["grids"], POLICIES)
    lora = [j for j in jobs if j[0] == "strategy=lora"]
    assert len(lora) == 2 * 2 * 2 * 5 and len(jobs) - len(lora) == 2 * 2 * 5
    assert ["strategy=lora", "optimizer.lr=0.01", "strategy.rank=16", "dataset.fraction=1.0", "seed=4"] in lora
    assert {tuple(j[1:3]) for j in lora} == {(f"optimizer.lr={lr}", f"strategy.rank={r}") for lr in ("0.003", "0.01") for r in (4, 16)}
    make = (root / "Makefile").read_text().split("study-peft: setup", 1)[1].split("\n\n", 1)[0]
    assert "sweep=fair_x_fraction" in make and "strategy=scratch,linear_probe,finetune,bitfit,lora" in make
