"""benchmarks/simulate_halving.py: its reader of W&B offline runs (wandb's private protobuf, pinned here) and the
successive-halving rule it simulates, on hand-made curves whose outcome is worked out by hand."""

from __future__ import annotations

import importlib.util
import json
import math
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import wandb

from conftest import ROOT


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("simulate_halving", ROOT / "benchmarks" / "simulate_halving.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sim = load_script()


def test_the_reader_reads_back_what_an_offline_run_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins wandb's transaction log and ``wandb_internal_pb2.Record``: a wandb upgrade that changes either fails here."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=tmp_path, project="pin")
    logged = [(0, 0.25), (1, 0.5), (2, 0.375)]
    for step, (epoch, acc) in enumerate(logged):
        run.log({"train/loss": 1.0 / (step + 1), "trainer/global_step": 10 * step}, step=2 * step)
        run.log({"val/acc": acc, "epoch": epoch, "trainer/global_step": 10 * step + 9}, step=2 * step + 1)
    run.finish()
    (log_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    rows = sim.wandb_history(log_file)
    assert [(r["epoch"], r["val/acc"]) for r in rows if "val/acc" in r] == logged
    assert [r["trainer/global_step"] for r in rows] == [0, 9, 10, 19, 20, 29]
    assert sim.validation_curve(tmp_path) == {1: 0.25, 2: 0.5, 3: 0.375}  # epochs completed: Lightning's index + 1


def test_a_rung_stops_at_whole_validated_epochs_rounded_up() -> None:
    assert sim.rung_epochs(10, Fraction(1, 4)) == 3  # ceil(2.5), validated every epoch
    assert sim.rung_epochs(6, Fraction(1, 9)) == 1
    assert sim.rung_epochs(40, Fraction(1, 3)) == 14  # k = 2: ceil(13.3 / 2) validations of 2 epochs
    assert sim.rung_epochs(50, Fraction(1, 3)) == 18  # k = 3
    assert sim.rung_epochs(50, Fraction(99, 100)) == 50  # never past the planned epochs
    assert sim.rung_score({1: 0.2, 2: 0.5, 3: 0.4, 4: 0.9}, 3) == 0.5  # the best so far, not the last
    assert math.isnan(sim.rung_score({2: 0.5}, 1))


def cell(curves: dict[str, list[float]], lrs: dict[str, float] | None = None,
         scales: dict[str, float] | None = None) -> pd.DataFrame:
    """One cell: a run per curve (validated every epoch, 10 steps an epoch), named by its key; LR 0.01 and
    backbone LR scale 1 unless given."""
    rows = []
    for name, values in curves.items():
        lr = (lrs or {}).get(name, 0.01)
        rows.append({"path": name, "epochs": len(values), "steps": 10.0 * len(values),
                     "curve": {e + 1: v for e, v in enumerate(values)}, "score": max(values), "lr": lr,
                     "backbone_lr": lr * (scales or {}).get(name, 1.0), "config": json.dumps({"name": name, "optimizer.lr": lr})})
    return pd.DataFrame(rows)


def test_halving_keeps_the_top_ceil_n_over_eta_at_each_rung_and_counts_the_steps() -> None:
    """10 epochs, rungs 1/4 and 1/2, eta 2: rung 1 stops at epoch 3 and keeps 3 of 5 (C .7, B .5, D .4;
    A and E stop after 30 steps), rung 2 stops at epoch 5 and keeps 2 of 3 (D stops after 50 steps), C and
    B run out (100 steps each) and C is selected: 310 steps. A, the exhaustive choice, starts too slowly."""
    runs = cell({"A": [0.1] * 9 + [0.95], "B": [0.5] * 10, "C": [0.2, 0.2] + [0.7] * 8,
                 "D": [0.4] * 9 + [0.8], "E": [0.3] * 10})
    assert sim.halve(runs, ((Fraction(1, 4), Fraction(1, 2)), 2)) == ("C", 310.0)
    assert sim.ranked(runs, runs["score"])["path"].iloc[0] == "A"
    assert sim.halve(runs.iloc[:1], ((Fraction(1, 4),), 2)) == ("A", 100.0)  # one configuration: not halved


def test_a_tie_at_the_cut_goes_on_and_the_final_tie_to_the_smaller_learning_rate() -> None:
    """Tied at epoch 2: both go on (as the sweeper's halving.promote); at the end the report's rule picks
    the better full run, and between equal ones the smaller optimizer.lr (then the smaller backbone LR)."""
    curves = {"fast": [0.5, 0.5, 0.9, 0.9], "slow": [0.5, 0.5, 0.6, 0.6]}
    runs = cell(curves, lrs={"fast": 0.1, "slow": 0.001}, scales={"fast": 0.001})
    assert sim.halve(runs, ((Fraction(1, 2),), 2)) == ("fast", 80.0)  # nothing pruned: all 80 steps trained
    curves = {"fast": [0.4, 0.5, 0.6, 0.6], "slow": [0.4, 0.5, 0.6, 0.6], "bad": [0.1, 0.2, 0.3, 0.3]}
    runs = cell(curves, lrs={"fast": 0.01, "slow": 0.01, "bad": 0.001}, scales={"slow": 0.1})
    assert sim.halve(runs, ((Fraction(1, 2),), 3)) == ("slow", 100.0)  # bad pruned after 2 of its 4 epochs


def test_a_candidate_is_compared_with_the_exhaustive_selection() -> None:
    runs = cell({"A": [0.1] * 9 + [0.95], "B": [0.5] * 10, "C": [0.2, 0.2] + [0.7] * 8,
                 "D": [0.4] * 9 + [0.8], "E": [0.3] * 10})
    runs = runs.assign(strategy="scratch", size=0.1, seed=0, selected=runs["path"] == "A",
                       test=[0.9, 0.5, 0.6, 0.7, 0.3])
    probe = cell({"P": [0.6]}).assign(strategy="linear_probe", size=0.1, seed=0, selected=True, test=[0.65],
                                      steps=0.0, epochs=0)
    out = sim.evaluate(pd.concat([runs, probe], ignore_index=True), "1/4,1/2:2")
    assert (out["cells"], out["halved_cells"], out["same_config"]) == (2, 1, 0)
    assert out["steps_ratio"] == pytest.approx(310 / 500)
    assert out["mean_test_change_pt"] == pytest.approx(-30.0)
    assert out["mean_val_regret_pt"] == pytest.approx(25.0)
    assert (out["top_strategy_exhaustive"], out["top_strategy_halved"]) == ({0.1: "scratch"}, {0.1: "linear_probe"})
    assert out["same_top_strategy_sizes"] == 0
    assert out["changed_to_smaller_lr"] == 0  # C and A share the LR
    assert "| 1/4, 1/2 | 2 | all | 0 of 1 cells | 0.62× | -30.00 pt | -30.00 pt | 25.00 pt | 0 of 1 |" in sim.table([out])


@pytest.mark.parametrize("text", ["1/3", "1/3:1", "2/3,1/3:2", "1/3,1:2", "a:2"])
def test_a_bad_candidate_is_refused_with_its_fix(text: str) -> None:
    with pytest.raises(ValueError, match="Fix: e.g."):
        sim.parse_candidate(text)


def test_a_curve_with_a_gap_or_another_best_is_refused() -> None:
    sim.check_curve("run", {1: 0.5, 2: 0.75}, 2, 0.75)
    sim.check_curve("run", {e: 0.5 for e in range(2, 41, 2)}, 40, 0.5)  # k = 2: validated after 2, 4, ..., 40
    with pytest.raises(ValueError, match="validated after epochs \\[1, 3\\], not every 1 of 3"):
        sim.check_curve("run", {1: 0.5, 3: 0.75}, 3, 0.75)
    with pytest.raises(ValueError, match="is not its val/acc_best"):
        sim.check_curve("run", {1: 0.5, 2: 0.75}, 2, 0.5)


def test_no_run_to_simulate_is_one_line_with_its_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="^simulate_halving: error: no completed run of scratch below .*Fix: "):
        sim.main([str(tmp_path), "--strategies", "scratch"])
    with pytest.raises(SystemExit, match="^simulate_halving: error: candidate '1/3' is not RUNGS:ETA. Fix: "):
        sim.main([str(tmp_path), "--candidates", "1/3"])
