"""W&B as the place where a sweep is compared, read back from the offline run files (``wandb_records``).

One multirun, two learning rates of one strategy, without ``sweep=`` (so its folder is ``<experiment>/multirun``),
then two ``transferlab-report`` calls with ``--wandb-project``: the runs' names, group, curves and summary,
one W&B run per job whatever the number of reports, and the report's own run in the sweep's group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conftest import make_cfg, read_result
from test_sweeps import TINY, _train_cli
from transferlab.record import RunRecord, Status
from transferlab.report.cli import main as report_main
from transferlab.run.dashboard import distinguishing, run_name, run_tags
from transferlab.run.lifecycle import train
from transferlab.run.trainer import log_interval
from wandb_records import OfflineRun, RecordingApi, read_run

LRS = (0.001, 0.01)
STEPS = 8  # two epochs of four steps (budget.epoch_steps): every step logged, two epochs of parameter counts


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The multirun and two reports of it: its folder, the jobs' records and runs, the reports' outputs."""
    tmp = tmp_path_factory.mktemp("wandb_sweep")
    _train_cli(tmp, "-m", "experiment=digits_transfer", "strategy=scratch", f"optimizer.lr={LRS[0]},{LRS[1]}",
               "dataset.fraction=0.05", "seed=0", *TINY, "budget=steps", f"budget.steps={STEPS}", "budget.epoch_steps=4",
               "logger=wandb", OMP_NUM_THREADS="1")
    runs_dir = tmp / "runs"
    sweep_dir = runs_dir / "digits_transfer" / "multirun"
    records = {p.parent: json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/result.json"))}
    outputs = []
    for i in range(2):
        import wandb

        assert report_main([str(sweep_dir), "--out", str(tmp / f"report{i}"), "--wandb-project", "transferlab"]) == 0
        wandb.teardown()
        outputs.append(tmp / f"report{i}")
    return {"runs_dir": runs_dir, "sweep_dir": sweep_dir, "records": records, "reports": outputs,
            "runs": {folder: read_run(Path(r["wandb"]["dir"])) for folder, r in records.items()}}


def test_the_multirun_is_one_group_named_after_its_folder_and_its_runs_have_distinct_names(sweep: dict) -> None:
    runs: dict[Path, OfflineRun] = sweep["runs"]
    assert len(runs) == len(LRS)
    group = sweep["sweep_dir"].relative_to(sweep["runs_dir"]).as_posix()
    assert group == "digits_transfer/multirun"
    assert {run.group for run in runs.values()} == {group}
    names = sorted(run.name for run in runs.values())
    assert len(set(names)) == len(LRS)
    # the grid's LR by name; the command line's other settings (backbone, budget) by a digest, the same for both
    assert [name.rsplit("-", 1)[0] for name in names] == [f"scratch-f0.05-s0-lr={lr}" for lr in LRS]
    assert len({name.rsplit("-", 1)[1] for name in names}) == 1
    for folder, run in runs.items():
        lr = sweep["records"][folder]["hparams"]["optimizer.lr"]
        assert f"lr:{lr}" in run.tags and "seed:0" in run.tags and "weights:none" in run.tags
        assert "strategy:scratch" in run.tags and "fraction:0.05" in run.tags and f"steps:{STEPS}" in run.tags
        assert run.job_type == "scratch"
        assert sweep["records"][folder]["wandb"]["group"] == group  # the record names the group: the report's default


def test_every_step_logs_the_lr_of_each_parameter_group_and_the_loss(sweep: dict) -> None:
    for folder, run in sweep["runs"].items():
        record = sweep["records"][folder]
        assert record["steps"] == STEPS
        lr_rows = [row for row in run.history if "lr/head" in row]
        assert [row["trainer/global_step"] for row in lr_rows] == list(range(STEPS))
        assert all(any(k.startswith("lr/backbone.") for k in row) for row in lr_rows)
        assert lr_rows[0]["lr/head"] == pytest.approx(record["hparams"]["optimizer.lr"])  # cosine from the grid's LR
        assert lr_rows[-1]["lr/head"] < lr_rows[0]["lr/head"]
        loss_steps = [row["trainer/global_step"] for row in run.history if "train/loss_step" in row]
        assert len(loss_steps) == STEPS


def test_epoch_curves_have_the_epoch_as_x_axis(sweep: dict) -> None:
    for run in sweep["runs"].values():
        params = [row for row in run.history if "params/trainable" in row]
        assert [row["epoch"] for row in params] == [0, 1]  # one count per epoch
        assert all(row["params/trainable"] == row["params/total"] for row in params)  # scratch trains everything
        assert run.axes["val/acc"] == "epoch" and run.axes["params/trainable"] == "epoch"
        assert run.axes["*"] == "trainer/global_step"  # everything else against the step (Lightning's own)


def test_the_summary_holds_what_the_report_compares(sweep: dict) -> None:
    for folder, run in sweep["runs"].items():
        record = sweep["records"][folder]
        for key in ("n_train", "fraction", "seed", "subset_seed", "draw", "steps", "epochs", "train_time_s",
                    "trainable_params", "total_params"):
            assert run.summary[key] == record[key], key
        assert run.summary["n_train"] == 60


def test_after_two_reports_each_job_still_has_exactly_one_wandb_run(sweep: dict) -> None:
    for folder, record in sweep["records"].items():
        offline = sorted((folder / "wandb").glob("offline-run-*"))
        assert [p.name.rsplit("-", 1)[1] for p in offline] == [record["wandb"]["id"]]
        assert "selected" not in read_run(offline[0]).summary  # offline: written at sync time, not by a second run


def test_the_report_run_joins_the_sweep_group_with_its_tables_and_figures(sweep: dict) -> None:
    for out in sweep["reports"]:
        (run_dir,) = (out / "wandb").glob("offline-run-*")  # inside the report's folder, one per report
        run = read_run(run_dir)
        assert run.group == "digits_transfer/multirun" and run.job_type == "report"
        assert (run_dir / "files" / "report.md").is_file()
        assert list(run_dir.glob("files/media/images/report/learning_curve*.png"))
        (selection,) = run_dir.glob("files/media/table/report/selection*.table.json")
        table = json.loads(selection.read_text())
        rows = [dict(zip(table["columns"], row)) for row in table["data"]]
        ids = {r["wandb"]["id"] for r in sweep["records"].values()}
        assert {row["wandb.id"] for row in rows} == ids and sum(row["selected"] for row in rows) == 1
        for key in ("report/results", "report/answer", "report/test_acc_by_n_train_table", "report/markdown"):
            assert any(key in k for k in run.summary), (key, sorted(run.summary))


def test_apply_selection_writes_the_report_s_selection_through_the_public_api(sweep: dict,
                                                                               monkeypatch: pytest.MonkeyPatch,
                                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import wandb

    monkeypatch.setattr(wandb, "Api", RecordingApi)
    RecordingApi.updates = {}
    assert report_main(["--wandb-apply-selection", str(sweep["reports"][-1])]) == 0  # the command the report prints
    assert f"W&B: marked {len(LRS)} run(s)" in capsys.readouterr().out
    chosen = pd.read_csv(sweep["reports"][-1] / "results.csv")
    expected = {f"transferlab/{row['wandb.id']}": {"selected": bool(row["selected"])} for _, row in chosen.iterrows()}
    assert RecordingApi.updates == expected and sum(v["selected"] for v in expected.values()) == 1


def test_names_tell_apart_jobs_that_differ_outside_the_grid_too() -> None:
    record = RunRecord(Status.RUNNING, strategy="finetune", fraction=0.1, seed=0, weights="source", backbone="b",
                       dataset="digits", hparams={"optimizer.lr": 0.003, "strategy.backbone_lr_scale": 0.1})
    names, tags = set(), []
    for backbone in ("resnet18", "resnet50"):
        items = distinguishing([f"backbone.name={backbone}", "optimizer.lr=0.003", "strategy=finetune", "seed=0",
                                "strategy.backbone_lr_scale=0.1", "logger=wandb", "experiment=x"], Path("/x"), record.hparams)
        names.add(run_name(record, items))
        tags.append(run_tags(record, items))
    assert len(names) == 2  # the backbone by a digest: not a grid hyperparameter, but it tells the jobs apart
    assert all(n.startswith("finetune-f0.1-s0-source-lr=0.003-backbone_lr_scale=0.1-") for n in names)
    assert [t[-1] for t in tags] == ["name:resnet18", "name:resnet50"]
    assert "logger:wandb" not in tags[0] and "experiment:x" not in tags[0]  # neither names the run's folder


@pytest.mark.parametrize(("configured", "steps", "every"), [(5, 8, 1), (5, 199, 1), (5, 250, 2), (5, 10_000, 5),
                                                             (None, 100_000, 50), (50, 1_000, 10)])
def test_short_runs_log_every_step_and_long_ones_as_configured(configured: int | None, steps: int, every: int) -> None:
    assert log_interval(configured, steps) == every


def test_gradual_unfreezing_shows_as_trainable_parameters_per_epoch(tmp_path: Path, one_thread: None) -> None:
    import wandb

    out = tmp_path / "run"
    try:
        train(make_cfg(tmp_path, *TINY, "strategy=gradual", "strategy.milestones=[1,2]", "dataset.fraction=0.05",
                       "trainer.max_epochs=3", "logger=wandb", "logger.mode=offline"), out_dir=out)
    finally:
        wandb.teardown()  # W&B's process-wide settings (its folder) must not leak into later tests
    record = read_result(out)
    rows = [row for row in read_run(Path(record["wandb"]["dir"])).history if "params/trainable" in row]
    assert [row["params/trainable_blocks"] for row in rows] == [0, 1, 2]  # the head, then one block per milestone
    counts = [row["params/trainable"] for row in rows]
    assert counts == sorted(set(counts)) and counts[-1] == record["trainable_params"]
    assert record["trainable_params_start"] == counts[0]
