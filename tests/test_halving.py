"""Successive halving in the grid sweeper (``hydra.sweeper.halving``): it expands, promotes, resumes after a
kill to the same selections, never selects a pruned run, and a promoted run ends where a straight run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hydra_plugins.transferlab_grid.halving import Halving, cells, keep_count, promote
from test_sweeps import TINY, _env, _train_cli
from transferlab.errors import ConfigError
from transferlab.record import RunRecord, Status

#: 4 scratch LRs (two hopeless) and the probe, 4 epochs validated each epoch; rungs at 1/4 and 1/2, halving
SWEEP = ["-m", "hydra/sweeper=transferlab_grid", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         "strategy=scratch,linear_probe", "dataset.fraction=0.1", "dataset.batch_size=16", "seed=0", *TINY, "trainer.max_epochs=4",
         "max_validations=null", "logger=none",
         "++hydra.sweeper.grids={linear_probe:{},scratch:{optimizer.lr:'1e-7,1e-6,0.003,0.01'}}"]
HALVING = ["hydra.sweeper.halving={rungs:[0.25,0.5],reduction_factor:2}"]


def _records(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")}


def _outcome(records: dict[str, dict]) -> dict[str, tuple]:
    """What a halving sweep decided and measured, per run folder (a killed sweep's running records have no epochs yet)."""
    return {name: (r["status"], (r.get("rung") or {}).get("epoch"), r.get("epochs"), json.dumps(r.get("metrics"), sort_keys=True))
            for name, r in records.items()}


@pytest.mark.parametrize(("spec", "pattern"), [
    ({"rungs": [0.5, 0.25]}, r"rungs=\[0.5, 0.25\] must be increasing fractions.*Fix: e.g. hydra.sweeper.halving.rungs="),
    ({"rungs": [1.0]}, r"each in \(0, 1\)"),
    ({"rungs": ["a/b"]}, r"'a/b' is not a fraction"),
    ({"rungs": [0.5], "reduction_factor": 1}, r"reduction_factor=1 must be a whole number ≥ 2. Fix"),
    ({"rungs": [0.5], "eta": 2}, r"halving has no key \['eta'\]"),
    ({"rungs": [0.5], "reduction_factor": 2.5}, r"reduction_factor=2.5 must be a whole number"),
])
def test_bad_halving_fails_with_the_fix(spec: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        Halving.parse(spec)


@pytest.mark.parametrize("bad", ["hydra.sweeper.halving.rungs=[0.75,0.5]", "strategy=lp_ft"])
def test_a_bad_sweep_is_one_line_before_any_job(tmp_path: Path, bad: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "transferlab.train", "-m", "experiment=digits_transfer",
                           "sweep=fair_x_fraction_halving", bad], env=_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("transferlab: error: ") and "Fix:" in proc.stderr
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]  # nothing ran, nothing was written


def test_cells_rungs_and_promotion_follow_the_reports_rule() -> None:
    assert Halving.parse({"rungs": ["1/9", 0.5], "reduction_factor": 3}) == Halving((1 / 9, 0.5), 3)
    assert Halving.parse({"rungs": [], "reduction_factor": 2}) is None  # the default: off
    jobs = [["strategy=scratch", "optimizer.lr=0.1", "seed=0"], ["strategy=scratch", "optimizer.lr=0.01", "seed=0"],
            ["strategy=scratch", "optimizer.lr=0.1", "seed=1"], ["strategy=linear_probe", "seed=0"]]
    grouped = cells(jobs, {"scratch": {"optimizer.lr": "0.1,0.01"}, "linear_probe": {}})
    assert list(grouped.values()) == [jobs[:2], [jobs[2]], [jobs[3]]]
    assert [keep_count(n, 3) for n in (1, 2, 3, 4, 5, 9)] == [1, 1, 1, 2, 2, 3]
    def rec(lr: float) -> RunRecord:
        return RunRecord(status=Status.PAUSED, hparams={"optimizer.lr": lr})
    scored = [(Path("a"), rec(0.1), 0.5), (Path("b"), rec(0.01), 0.5), (Path("c"), rec(0.001), 0.4), (Path("d"), None, None)]
    assert promote(scored, 2) == [Path("b"), Path("a")]  # in the report's order: a tie to the smaller LR first
    assert promote(scored, 4) == [Path("b"), Path("a")]  # keeps 1, and the one tied with it: a tie prunes nothing
    assert promote(scored[1:], 3) == [Path("b")]
    assert promote(scored, 2, higher=False) == [Path("c"), Path("b"), Path("a")]
    assert promote([(Path("d"), None, None), (Path("e"), None, None)], 2) == [Path("d")]  # no score: never more than the count


@pytest.fixture(scope="module")
def halved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted halving sweep, shared by the tests below (each sweep costs about a minute)."""
    return _sweep(tmp_path_factory.mktemp("halving") / "halved", HALVING)


def test_halving_promotes_and_prunes_by_rung_and_the_report_never_selects_a_pruned_run(tmp_path: Path, halved_dir: Path) -> None:
    halved = _records(halved_dir)
    statuses = sorted(r["status"] for r in halved.values())
    # rung 1 (epoch 1): lr 0.01 leads, and 0.003 ties with the hopeless 1e-6 and 1e-7 at chance level, so all
    # four go on (a tie prunes nothing); rung 2 (epoch 2): 0.01 and 0.003 go on, the hopeless two are pruned
    assert statuses == ["completed", "completed", "completed", "pruned", "pruned"]
    pruned = {r["hparams"]["optimizer.lr"]: r for r in halved.values() if r["status"] == "pruned"}
    assert sorted(pruned) == [1e-7, 1e-6] and all(r["rung"]["epoch"] == r["epochs"] == 2 for r in pruned.values())
    assert not any((halved_dir / name / "checkpoints").exists() for name, r in halved.items() if r["status"] == "pruned")
    for record in halved.values():  # the promoted ran their whole schedule, resumed from the rungs (the numbers
        if record["status"] == "completed" and record["strategy"] == "scratch":  # equal a straight run's: test_rungs)
            assert record["epochs"] == record["planned_epochs"] == 4 and [e for e, _ in record["val_curve"]] == [1, 2, 3, 4]
            assert record["resumed_from_epoch"] == 1  # Lightning's 0-based epoch 1: resumed after rung 2's 2 epochs
    # the report counts pruned runs as compared and never selects them
    report = subprocess.run([sys.executable, "-m", "transferlab.report", str(halved_dir), "--out", str(tmp_path / "rep")],
                            env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    _assert_report(tmp_path / "rep")


def _assert_report(report_dir: Path) -> None:
    table = pd.read_csv(report_dir / "results.csv")
    scratch = table[table["strategy"] == "scratch"]
    assert sorted(scratch["status"]) == ["completed", "completed", "pruned", "pruned"]
    chosen = scratch[scratch["selected"].astype(bool)]
    assert len(chosen) == 1 and chosen["status"].iloc[0] == "completed"
    text = (report_dir / "report.md").read_text()
    assert "2 pruned at a rung" in text and "0 failed" in text and "| pruned |" not in text
    assert text.count("pruned (1)") == 2  # the LR view marks lr 1e-7 and 1e-6, pruned at seed 0


def _sweep(folder: Path, extra: list[str]) -> Path:
    folder.mkdir()
    _train_cli(folder, *SWEEP, *extra, timeout=600)
    return folder / "runs" / "default" / "multirun"


def test_a_sweep_killed_during_a_rung_resumes_to_the_same_selections(tmp_path: Path, halved_dir: Path) -> None:
    reference = _outcome(_records(halved_dir))
    killed = tmp_path / "killed"
    killed.mkdir()
    sweep_dir = killed / "runs" / "default" / "multirun"
    proc = subprocess.Popen([sys.executable, "-m", "transferlab.train", *SWEEP, *HALVING], env=_env(killed), cwd=killed,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            records = _records(sweep_dir).values() if sweep_dir.exists() else []
            if any(r["status"] == "paused" and r["rung"]["epoch"] == 2 for r in records):
                break  # the second rung is under way (one of its jobs paused there): kill the sweep and its jobs
            time.sleep(0.1)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert _outcome(_records(sweep_dir)) != reference  # it was stopped partway
    _train_cli(killed, *SWEEP, *HALVING, timeout=600)
    assert _outcome(_records(sweep_dir)) == reference
