"""Selection on validation, the claims' tests, the answer per size and its cost (issue #13), on hand-made result sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from test_report import make_record, write
from transferlab.report import selection as selection_module
from transferlab.report.cli import analyse, main, scan_results, write_report
from transferlab.report.findings import findings
from transferlab.report.recommend import answers
from transferlab.report.paired import WELCH, compare
from transferlab.report.stats import ALPHA, fmt_p

LRS = (0.001, 0.003, 0.01)


def run(root: Path, strategy: str, seed: int, test: float, val: float | None, frac: float = 0.1,
        status: str = "completed", time_s: float | None = None, **hparams: object) -> Path:
    """One run of a configuration (``hparams`` by their last key part: lr, weight_decay, backbone_lr_scale,
    unfreeze_top_k) in its own folder."""
    keys = {"lr": "optimizer.lr", "weight_decay": "optimizer.weight_decay",
            "backbone_lr_scale": "strategy.backbone_lr_scale", "unfreeze_top_k": "strategy.unfreeze_top_k"}
    hp = {keys[k]: v for k, v in hparams.items()}
    name = f"{strategy}-f{frac}-s{seed}-" + "-".join(f"{k}{v}" for k, v in sorted(hparams.items()))
    metrics = {"test/acc": test, "test/f1_macro": test} | ({} if val is None else {"val/acc_best": val})
    return write(root / name, make_record(strategy, frac, seed, test, status=status, hparams=hp, metrics=metrics,
                                          config_hash=name, train_time_s=time_s or 1.0 + seed))


def row(summary: pd.DataFrame, strategy: str, size: float = 0.1) -> pd.Series:
    sel = summary[(summary["strategy"] == strategy) & np.isclose(summary["size"], size)]
    assert len(sel) == 1, sel
    return sel.iloc[0]


# ---------------------------------------------------------------- selection


@pytest.fixture()
def trap(tmp_path: Path) -> Path:
    """Per seed, lr=0.001 has the best test accuracy but the worst validation score; lr=0.003 the best val."""
    root = tmp_path / "runs"
    for seed in range(3):
        d = 0.01 * seed
        run(root, "finetune", seed, test=0.95 + d, val=0.80 + d, lr=0.001)
        run(root, "finetune", seed, test=0.85 + d, val=0.90 + d, lr=0.003)
        run(root, "finetune", seed, test=0.90 + d, val=0.85 + d, lr=0.01)
    return root


def test_the_reported_test_metric_is_the_validation_selected_one(trap: Path, tmp_path: Path) -> None:
    a = analyse(scan_results([trap]))
    r = row(a.summary, "finetune")
    assert r["acc_mean"] == pytest.approx(0.86)  # lr=0.003's tests, not the best tests (0.96)
    assert r["val_mean"] == pytest.approx(0.91)
    assert r["configs"] == "3" and r["selected_hparams"] == "lr=0.003 (3/3)"
    assert r["n_runs"] == 3 and r["grid_time_s"] == pytest.approx(3 * 2.0)  # 3 configs × (1 + seed), mean over seeds
    paths = write_report([trap], tmp_path / "out")
    csv = pd.read_csv(paths.csv)
    chosen = csv[csv["selected"]]
    assert len(chosen) == 3 and set(chosen["hparams.optimizer.lr"]) == {0.003}
    assert set(csv.loc[~csv["selected"], "counted"]) == {True}  # compared, not averaged
    md = paths.md.read_text()
    assert "| finetune | 0.1 | 72 | 0.8600 ± 0.0100 |" in md
    assert "lr=0.003 (3/3)" in md and "3 completed run(s) averaged" in md and "6 other completed" in md
    assert "the test split never selects" in md and "Ties go to the smaller `optimizer.lr`" in md


def test_a_validation_metric_given_by_flag_selects_and_a_loss_is_minimised(trap: Path) -> None:
    for p in trap.rglob("result.json"):  # a validation loss that is lowest at the smallest LR
        rec = json.loads(p.read_text())
        rec["metrics"]["val/loss"] = rec["hparams"]["optimizer.lr"]
        p.write_text(json.dumps(rec))
    a = analyse(scan_results([trap]), "val/loss", explicit=True)
    r = row(a.summary, "finetune")
    assert r["selected_hparams"] == "lr=0.001 (3/3)" and r["acc_mean"] == pytest.approx(0.96)
    assert "the lowest validation metric `val/loss`" in a.selection.rule
    out = trap.parent / "out"
    assert main([str(trap), "--out", str(out), "--select-metric", "val/loss", "--select-mode", "max", "--no-wandb-mark"]) == 0
    csv = pd.read_csv(out / "results.csv")
    assert set(csv.loc[csv["selected"], "hparams.optimizer.lr"]) == {0.01}


def test_ties_go_to_the_smaller_lr_then_the_smaller_backbone_lr(tmp_path: Path) -> None:
    for lr in (0.01, 0.003, 0.03):  # equal validation: the smallest LR wins, whatever the test says
        run(tmp_path, "finetune", 0, test=0.5 + lr, val=0.9, lr=lr, backbone_lr_scale=1.0)
    for wd, scale in ((0.0, 1.0), (0.1, 0.1), (0.2, 0.3)):  # equal validation and LR: the smallest backbone
        # LR wins, though the configuration's text (weight decay first) would put it second
        run(tmp_path, "finetune", 1, test=0.5 + scale, val=0.9, lr=0.01, weight_decay=wd, backbone_lr_scale=scale)
    s = analyse(scan_results([tmp_path])).selection.selected.set_index("seed")
    assert s.loc[0, "lr"] == 0.003 and s.loc[0, "choice"] == "lr=0.003"
    assert s.loc[1, "backbone_lr"] == pytest.approx(0.001)
    assert s.loc[1, "choice"] == "weight_decay=0.1, backbone_lr_scale=0.1"


def test_a_cell_where_every_configuration_failed_is_listed_as_failed(tmp_path: Path) -> None:
    for lr in LRS:
        run(tmp_path, "scratch", 0, 0.0, None, status="failed", lr=lr)  # every config of this cell failed
        run(tmp_path, "scratch", 1, 0.7 + lr, 0.7 + lr, lr=lr)
    run(tmp_path, "scratch", 2, 0.0, None, status="failed", lr=0.001)  # one failed, one completed: selected
    run(tmp_path, "scratch", 2, 0.8, 0.8, lr=0.003)
    run(tmp_path, "scratch", 3, 0.0, None, status="interrupted", lr=0.001)  # pending, not failed
    a = analyse(scan_results([tmp_path]))
    cells = a.selection.unselected.set_index("seed")
    assert list(cells.index) == [0, 3]
    assert cells.loc[0, "status"] == "failed" and cells.loc[0, "n_configs"] == 3
    assert cells.loc[3, "status"] == "pending"
    assert row(a.summary, "scratch")["n_runs"] == 2
    md = write_report([tmp_path], tmp_path / "out").md.read_text()
    failed = md.split("Cells where every configuration failed", 1)[1].split("Pending cells", 1)[0]
    assert "| scratch | fraction 0.1 | 0 | 3 |" in failed and "| scratch | fraction 0.1 | 3 |" not in failed
    assert "| scratch | fraction 0.1 | 3 | 1 |" in md.split("Pending cells", 1)[1]
    assert "1 interrupted or running (pending: they resume when run again), 4 failed/unreadable" in md
    assert "interrupted (pending)" in md


# ---------------------------------------------------------------- the selection metric


def test_a_metric_no_run_logged_fails_clearly_before_writing(trap: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main([str(trap), "--out", str(out), "--select-metric", "val/acc_bst", "--no-wandb-mark"]) == 2
    err = capsys.readouterr().err
    assert "'val/acc_bst' was logged by no completed run" in err
    assert "Did you mean val/acc_best?" in err and "test/acc, test/f1_macro, val/acc_best" in err
    assert not out.exists()
    assert main([str(trap), "--out", str(out), "--select-metric", "test/acc", "--no-wandb-mark"]) == 2
    assert "is a test metric" in capsys.readouterr().err and not out.exists()


def test_the_default_metric_missing_fails_only_when_there_is_something_to_select(tmp_path: Path) -> None:
    for lr in LRS:
        run(tmp_path / "grid", "finetune", 0, 0.5, None, lr=lr)
    with pytest.raises(selection_module.SelectionMetricError, match="val/acc_best"):
        analyse(scan_results([tmp_path / "grid"]))
    run(tmp_path / "one", "finetune", 0, 0.5, None, lr=0.001)  # one configuration a cell: nothing to select
    assert row(analyse(scan_results([tmp_path / "one"])).summary, "finetune")["acc_mean"] == 0.5


# ---------------------------------------------------------------- claims and the answer


def seeds(root: Path, strategy: str, accs: list[float], frac: float = 0.1, time_s: float = 1.0) -> None:
    for seed, acc in enumerate(accs):
        write(root / f"{strategy}-{frac}-{seed}", make_record(strategy, frac, seed, acc, train_time_s=time_s,
                                                              config_hash=f"{strategy}-{frac}-{seed}"))


SCRATCH_ACCS = [0.90, 0.92, 0.94]
WORSE = [0.86, 0.87, 0.88]  # below scratch at p < 0.05
CLOSE = [0.87, 0.89, 0.91]  # below scratch, p > 0.05


NOT_RECORDED = "not paired: the draw at seed 0 is not recorded"  # records without a draw fall back to Welch


def test_welch_p_values_match_scipy_and_the_claims_follow_them(tmp_path: Path) -> None:
    p_worse = stats.ttest_ind(WORSE, SCRATCH_ACCS, equal_var=False, alternative="less").pvalue
    p_close = stats.ttest_ind(CLOSE, SCRATCH_ACCS, equal_var=False, alternative="less").pvalue
    assert p_worse < ALPHA < p_close  # the constructed case straddles α
    for frac, probe in ((0.5, WORSE), (1.0, CLOSE)):
        seeds(tmp_path, "scratch", SCRATCH_ACCS, frac)
        seeds(tmp_path, "linear_probe", probe, frac)
    summary = analyse(scan_results([tmp_path])).summary
    for size, p in ((0.5, p_worse), (1.0, p_close)):
        c = compare(row(summary, "linear_probe", size), row(summary, "scratch", size))
        assert c.test == WELCH and c.p == pytest.approx(p, rel=1e-12) and c.note == NOT_RECORDED
    lines = findings(summary)
    negative = next(ln for ln in lines if ln.startswith("Negative transfer ("))
    assert (f"linear_probe at fraction 0.5 (0.8700 ± 0.0100 vs scratch 0.9200 ± 0.0200, Welch's t-test, {fmt_p(p_worse)}; "
            f"{NOT_RECORDED})") in negative
    assert "fraction 1 " not in negative
    at_1 = next(ln for ln in lines if ln.startswith("At fraction 1,"))
    assert f"not significantly better than linear_probe (Welch's t-test, {fmt_p(p_close)}; {NOT_RECORDED})" in at_1
    catch = next(ln for ln in lines if ln.startswith("Scratch "))
    assert catch.startswith("Scratch catches up at fraction 0.5 ")  # scratch is the better one at both sizes


def test_scratch_catches_up_where_it_is_no_longer_significantly_worse(tmp_path: Path) -> None:
    seeds(tmp_path, "scratch", WORSE, 0.5)
    seeds(tmp_path, "finetune", SCRATCH_ACCS, 0.5)
    seeds(tmp_path, "scratch", CLOSE, 1.0)
    seeds(tmp_path, "finetune", SCRATCH_ACCS, 1.0)
    catch = next(ln for ln in findings(analyse(scan_results([tmp_path])).summary) if ln.startswith("Scratch "))
    p = stats.ttest_ind(CLOSE, SCRATCH_ACCS, equal_var=False, alternative="less").pvalue
    assert catch.startswith("Scratch catches up at fraction 1 ") and fmt_p(p) in catch


def test_the_answer_is_the_cheapest_strategy_not_significantly_worse(tmp_path: Path) -> None:
    seeds(tmp_path, "finetune", [0.80, 0.85, 0.90], time_s=10.0)  # best mean, costly
    seeds(tmp_path, "linear_probe", [0.78, 0.80, 0.82], time_s=1.0)  # not significantly worse, cheap
    seeds(tmp_path, "scratch", [0.50, 0.51, 0.52], time_s=0.5)  # cheapest, significantly worse
    summary = analyse(scan_results([tmp_path])).summary
    p = stats.ttest_ind([0.78, 0.80, 0.82], [0.80, 0.85, 0.90], equal_var=False, alternative="less").pvalue
    assert p >= ALPHA
    (a,) = answers(summary)
    assert a.chosen["strategy"] == "linear_probe" and a.best["strategy"] == "finetune"
    assert a.vs_best is not None and a.vs_best.p == pytest.approx(p) and a.n_equivalent == 2
    md = write_report([tmp_path], tmp_path / "out").md.read_text()
    answer = md.split("## Answer", 1)[1].split("Generated", 1)[0]
    assert md.index("## Answer") < md.index("Generated") < md.index("## Results")
    assert (f"| fraction 0.1 | **linear_probe** | 0.8000 ± 0.0200, n=3 | not significantly worse than the best, "
            f"finetune (0.8500 ± 0.0500, Welch's t-test, {fmt_p(p)}; {NOT_RECORDED}); the cheapest of the 2 within the "
            "spread | 1.0 | 650 |") in answer


def test_the_answer_is_the_best_when_it_is_significantly_better(tmp_path: Path) -> None:
    seeds(tmp_path, "finetune", [0.90, 0.91, 0.92], time_s=10.0)
    seeds(tmp_path, "linear_probe", [0.70, 0.71, 0.72], time_s=1.0)
    (a,) = answers(analyse(scan_results([tmp_path])).summary)
    assert a.chosen["strategy"] == "finetune" and a.vs_best is None and a.n_equivalent == 1
    md = write_report([tmp_path], tmp_path / "out").md.read_text()
    p = stats.ttest_ind([0.70, 0.71, 0.72], [0.90, 0.91, 0.92], equal_var=False, alternative="less").pvalue
    assert (f"| **finetune** | 0.9100 ± 0.0100, n=3 | best test mean: significantly better than linear_probe "
            f"(Welch's t-test, {fmt_p(p)}; {NOT_RECORDED}) | 10.0 |") in md


def test_the_cost_is_the_whole_tuning_grid(trap: Path, tmp_path: Path) -> None:
    for seed in range(3):  # one configuration, tied with finetune's selection, slower than its selected run
        run(trap, "linear_probe", seed, test=0.85 + 0.01 * seed, val=0.5, time_s=3.0, lr=0.01)
    (a,) = answers(analyse(scan_results([trap])).summary)
    # finetune's selected run took 2 s a seed, its grid of 3 configurations 6 s: the probe (3 s) is cheaper
    assert a.best["strategy"] == "finetune" and a.chosen["strategy"] == "linear_probe"
    assert a.best["train_time_s"] == pytest.approx(2.0) and a.best["grid_time_s"] == pytest.approx(6.0)


# ---------------------------------------------------------------- sensitivity and freeze depth


def test_sensitivity_and_freeze_depth_figures_and_tables(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    for seed in range(2):
        for lr in LRS:
            for depth, drop in ((None, 0.02), (1, 0.1), (2, 0.0)):  # depth 2 best; at each depth lr=0.003 is
                acc = 0.9 - 0.05 * abs(np.log10(lr / 0.003)) - drop + 0.01 * seed
                run(tmp_path, "finetune", seed, acc, acc + 0.002, lr=lr, unfreeze_top_k=depth)
            for wd in (0.0, 0.1):  # at each LR the weight decay is selected on validation, not on test
                run(tmp_path, "linear_probe", seed, 0.6 + lr + wd, 0.7 - wd, lr=lr, weight_decay=wd)
    paths = write_report([tmp_path], tmp_path / "out")
    for png, shape in ((paths.sensitivity, (round(3.6 * 110), round(4.3 * 110))),
                       (paths.freeze_depth, (round(3.6 * 110), round(4.3 * 110)))):
        assert png is not None and png.stat().st_size > 10_000
        img = mpimg.imread(png)
        assert img.shape[:2] == shape and img[..., :3].std() > 0.05
    md = paths.md.read_text()
    assert "![Sensitivity to the learning rate](sensitivity.png)" in md
    assert "![How many top blocks to fine-tune](freeze_depth.png)" in md
    sens = md.split("## Sensitivity", 1)[1].split("## How many", 1)[0]
    assert "| strategy | size | lr=0.001 | lr=0.003 | lr=0.01 |" in sens
    # at lr=0.001 wd=0 has the better validation score (its test is the worse); every LR ties on validation,
    # so the overall selection is the smallest LR for both seeds
    assert "| linear_probe | fraction 0.1 | 0.601 ± 0.000 · val 0.700 · 2/2 | 0.603 ± 0.000 · val 0.700 · 0/2 |" in sens
    depth = md.split("## How many", 1)[1].split("## Findings", 1)[0]
    assert "| strategy | size | top blocks=1 | top blocks=2 | top blocks=all |" in depth
    assert ("| finetune | fraction 0.1 | 0.805 ± 0.007 · val 0.807 · 0/2 | 0.905 ± 0.007 · val 0.907 · 2/2 "
            "| 0.885 ± 0.007 · val 0.887 · 0/2 |") in depth


def test_a_selection_at_the_grid_s_edge_is_flagged(tmp_path: Path) -> None:
    """Most seeds picking the largest LR tried says the grid may stop short of the strategy's best."""
    for seed in range(3):
        for lr in LRS:
            best = 0.01 if seed < 2 else 0.003  # scratch: the largest LR wins in 2 of 3 seeds
            run(tmp_path, "scratch", seed, 0.8, 0.9 if lr == best else 0.8, lr=lr)
            run(tmp_path, "finetune", seed, 0.8, 0.9 if lr == 0.003 else 0.8, lr=lr)  # the middle one wins
    md = write_report([tmp_path], tmp_path / "out").md.read_text()
    edge = md.split("**At the grid's edge.**", 1)[1].split("##", 1)[0]
    assert "- scratch at fraction 0.1: lr=0.01, the grid's largest, was selected in 2 of 3 seeds" in edge
    assert "finetune" not in edge


def test_no_variation_draws_no_sensitivity_or_depth_figure(tmp_path: Path) -> None:
    for seed in range(2):
        run(tmp_path, "finetune", seed, 0.8, 0.8, lr=0.001, unfreeze_top_k=None)
        run(tmp_path, "linear_probe", seed, 0.7, 0.7, lr=0.01)
    paths = write_report([tmp_path], tmp_path / "out")
    assert paths.sensitivity is None and paths.freeze_depth is None
    assert not (tmp_path / "out" / "sensitivity.png").exists() and not (tmp_path / "out" / "freeze_depth.png").exists()
    assert "## How many" not in paths.md.read_text()


def test_an_inner_choice_is_shown_next_to_the_selected_values(trap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selection_module, "INNER_CHOICES", (("probe.l2", "l2"),))
    for p in trap.rglob("result.json"):
        rec = json.loads(p.read_text())
        rec["probe"] = {"l2": 0.01}
        p.write_text(json.dumps(rec))
    assert row(analyse(scan_results([trap])).summary, "finetune")["selected_hparams"] == "lr=0.003, l2=0.01 (3/3)"


# ---------------------------------------------------------------- W&B


def offline_runs(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[float, Path]:
    """Two configurations of one cell, each with an offline W&B run as transferlab-train makes it."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    dirs = {}
    for lr, val in ((0.001, 0.8), (0.01, 0.9)):
        f = run(root, "finetune", 0, 0.5, val, lr=lr)
        w = wandb.init(project="tl-select-test", id=f"sel{str(lr)[2:]}", mode="offline", dir=str(f.parent),
                       reinit="finish_previous")
        info = {"id": w.id, "mode": "offline", "dir": str(Path(w.dir).parent)}
        w.finish()
        rec = json.loads(f.read_text()) | {"wandb": info}
        f.write_text(json.dumps(rec))
        (f.parent / ".hydra").mkdir()  # the project comes from the run's Hydra config
        (f.parent / ".hydra" / "config.yaml").write_text("logger:\n  name: wandb\n  project: tl-select-test\n")
        dirs[lr] = f.parent / "wandb"
    wandb.teardown()
    return dirs


def online_runs(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`offline_runs`, their records saying online (as runs logged with a key and the network)."""
    offline_runs(root, monkeypatch)
    for f in root.rglob("result.json"):
        rec = json.loads(f.read_text())
        f.write_text(json.dumps(rec | {"wandb": rec["wandb"] | {"mode": "online"}}))


def test_offline_runs_are_left_as_they_are_and_the_output_says_how_to_apply_the_selection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = offline_runs(tmp_path / "runs", monkeypatch)
    for _ in range(2):
        assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"wandb sync {tmp_path / 'runs'}/*/wandb/offline-run-*" in out
    assert f"transferlab-report --wandb-apply-selection {tmp_path / 'out'}" in out
    for folder in dirs.values():  # no run resumed to write the flag: one W&B run per job
        assert len(list(folder.glob("offline-run-*"))) == 1
    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    assert dict(zip(csv["wandb.id"], csv["selected"])) == {"sel001": False, "sel01": True}


def test_online_runs_are_marked_through_the_public_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import wandb
    from wandb_records import RecordingApi

    online_runs(tmp_path / "runs", monkeypatch)
    monkeypatch.setattr(wandb, "Api", RecordingApi)
    RecordingApi.updates = {}
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    assert "W&B: marked 2 online run(s)" in capsys.readouterr().out
    # the project from each run's Hydra config: no run of it was made here
    assert RecordingApi.updates == {"tl-select-test/sel001": {"selected": False}, "tl-select-test/sel01": {"selected": True}}


def test_wandb_trouble_never_fails_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    online_runs(tmp_path / "runs", monkeypatch)
    boom = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no wandb today"))  # noqa: E731
    monkeypatch.setattr(wandb, "init", boom)
    monkeypatch.setattr(wandb, "Api", boom)
    with pytest.warns(RuntimeWarning, match="no wandb today") as warned:
        assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--wandb-project", "tl"]) == 0
    assert {str(w.message).split(" (")[0] for w in warned} >= {"could not log the report to wandb",
                                                                "could not mark 1 W&B run(s)"}
    assert (tmp_path / "out" / "report.md").is_file()
