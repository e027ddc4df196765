"""Tests for transferlab.report on hand-made result.json sets."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from transferlab.report import plot as report  # plot_learning_curve, and the COMBO_KEYS it imports from summary
from transferlab.report.cli import ReportPaths, analyse, main, scan_results, write_outputs, write_report
from transferlab.report.findings import findings
from transferlab.report.load import load_results
from transferlab.report.stats import t_quantile
from transferlab.report.summary import summarize
from transferlab.report.wandb_table import ReportLog, log_report_to_wandb

T975_DF2 = 4.302653  # t(0.975, df=2) from a printed t table

# strategy -> fraction -> test accuracies over seeds 0, 1, 2
ACCS: dict[str, dict[float, list[float]]] = {
    "scratch": {0.05: [0.55, 0.62, 0.69], 0.1: [0.40, 0.45, 0.50],
                0.5: [0.87, 0.885, 0.90], 1.0: [0.90, 0.92, 0.94]},
    "linear_probe": {0.05: [0.52, 0.55, 0.58], 0.1: [0.80, 0.82, 0.84],
                     0.5: [0.86, 0.87, 0.88], 1.0: [0.86, 0.87, 0.88]},
    "fine_tune": {0.05: [0.55, 0.60, 0.65], 0.1: [0.85, 0.86, 0.90],
                  0.5: [0.88, 0.89, 0.90], 1.0: [0.91, 0.93, 0.95]},
}
N_FULL = 720
TRAINABLE = {"scratch": 11_000_000, "linear_probe": 650, "fine_tune": 11_000_000}


def make_record(strategy: str, fraction: float | None, seed: int, acc: float,
                **overrides: object) -> dict:
    rec = {
        "status": "completed",
        "experiment": "digits_transfer", "dataset": "digits", "backbone": "resnet18",
        "weights": "none" if strategy == "scratch" else "source",
        "strategy": strategy, "head": "linear",
        "fraction": fraction, "per_class": None,
        "n_train": int(round((fraction or 1.0) * N_FULL)), "seed": seed,
        "metrics": {"test/acc": acc, "test/f1_macro": acc - 0.01, "val/acc_best": acc + 0.01},
        "trainable_params": TRAINABLE.get(strategy, 1000), "total_params": 11_000_000,
        "train_time_s": 10.0 * (fraction or 1.0) + seed, "epochs": 10,
        "config_hash": f"{strategy}-{fraction}-{seed}",
        "wandb": {"id": f"id{seed}", "mode": "offline", "dir": "/tmp/x"},
    }
    rec.update(overrides)
    return rec


def write(path: Path, record: dict | str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    f = path / "result.json"
    f.write_text(record if isinstance(record, str) else json.dumps(record))
    return f


def write_grid(root: Path) -> None:
    """The ACCS grid (scratch records weights="none", as a random-init run would)."""
    for strategy, by_size in ACCS.items():
        for frac, accs in by_size.items():
            for seed, acc in enumerate(accs):
                write(root / strategy / f"f{frac}" / f"s{seed}",
                      make_record(strategy, frac, seed, acc))


@pytest.fixture()
def grid(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    write_grid(root)
    return root


def row(summary: pd.DataFrame, strategy: str, size: float) -> pd.Series:
    sel = summary[(summary["strategy"] == strategy) & np.isclose(summary["size"], size)]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def line_starting(lines: list[str], prefix: str) -> str:
    hits = [ln for ln in lines if ln.startswith(prefix)]
    assert len(hits) == 1, lines
    return hits[0]


# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize("df,expected", [(1, 12.706205), (2, 4.302653), (4, 2.776445),
                                         (9, 2.262157), (29, 2.045230)])
def test_t_quantile_matches_table(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-6)


def test_mean_std_and_95_interval(grid: Path) -> None:
    df, problems = load_results([grid])
    assert problems == []
    assert len(df) == 36
    summary = summarize(df)
    assert len(summary) == 12
    assert set(summary["weights"]) == {"source"}  # scratch joins the transfer runs' table
    for strategy, by_size in ACCS.items():
        for frac, accs in by_size.items():
            r = row(summary, strategy, frac)
            a = np.array(accs)
            mean, std = a.mean(), a.std(ddof=1)
            half = T975_DF2 * std / math.sqrt(len(a))
            assert r["acc_mean"] == pytest.approx(mean, abs=1e-12)
            assert r["acc_std"] == pytest.approx(std, abs=1e-12)
            assert r["acc_ci_low"] == pytest.approx(mean - half, abs=1e-6)
            assert r["acc_ci_high"] == pytest.approx(mean + half, abs=1e-6)
            assert r["f1_mean"] == pytest.approx(mean - 0.01, abs=1e-12)
            assert r["f1_std"] == pytest.approx(std, abs=1e-9)
            assert r["n_runs"] == 3
            assert r["n_train"] == pytest.approx(round(frac * N_FULL))
            assert r["train_time_s"] == pytest.approx(10.0 * frac + 1.0)  # seeds 0,1,2 -> +1
            assert r["trainable_params"] == TRAINABLE[strategy]
    # rows are sorted by size, then strategy
    keys = list(zip(summary["size"], summary["strategy"]))
    assert keys == sorted(keys)


def test_single_run_has_no_interval(tmp_path: Path) -> None:
    write(tmp_path / "a", make_record("fine_tune", 0.1, 0, 0.8))
    summary = summarize(load_results([tmp_path])[0])
    r = row(summary, "fine_tune", 0.1)
    assert r["acc_mean"] == pytest.approx(0.8)
    assert math.isnan(r["acc_std"]) and math.isnan(r["acc_ci_low"])
    paths = write_report([tmp_path], tmp_path / "out")
    table_line = next(ln for ln in paths.md.read_text().splitlines()
                      if ln.startswith("| fine_tune"))
    assert "| n/a |" in table_line


def test_per_class_used_when_fraction_is_null(tmp_path: Path) -> None:
    for seed, acc in enumerate([0.5, 0.7]):
        write(tmp_path / f"pc{seed}", make_record("linear_probe", None, seed, acc, per_class=5,
                                                  n_train=50))
    summary = summarize(load_results([tmp_path])[0])
    assert list(summary["size_kind"]) == ["per_class"]
    assert list(summary["size"]) == [5.0]
    md = write_report([tmp_path], tmp_path / "out").md.read_text()
    assert "| strategy | per class |" in md


def test_minimal_records_are_tolerated(tmp_path: Path) -> None:
    # only the essentials; no n_train, params, time, f1, combination keys or config_hash
    for seed, acc in enumerate([0.6, 0.8]):
        write(tmp_path / f"r{seed}", {"status": "completed", "strategy": "fine_tune",
                                      "fraction": 0.2, "metrics": {"test/acc": acc}})
    df, problems = load_results([tmp_path])
    assert problems == [] and len(df) == 2
    r = row(summarize(df), "fine_tune", 0.2)
    assert r["acc_mean"] == pytest.approx(0.7) and r["n_runs"] == 2
    assert math.isnan(r["f1_mean"]) and math.isnan(r["n_train"])
    paths = write_report([tmp_path], tmp_path / "out")
    assert paths.png is not None and paths.png.stat().st_size > 0
    assert "| fine_tune | 0.2 | n/a | 0.7000 ± 0.1414 |" in paths.md.read_text()


# ---------------------------------------------------------------- findings


def test_best_strategy_per_size(grid: Path) -> None:
    lines = findings(summarize(load_results([grid])[0]))
    assert "the best mean is fine_tune's" in line_starting(lines, "At fraction 0.1,")
    assert "the best mean is scratch's" in line_starting(lines, "At fraction 0.05,")


def test_scratch_catch_up_size(grid: Path) -> None:
    lines = findings(summarize(load_results([grid])[0]))
    text = line_starting(lines, "Scratch ")
    # caught up at 0.05 by chance, falls behind at 0.1, then stays within the spread from 0.5
    assert text.startswith("Scratch catches up at fraction 0.5 ")


def test_scratch_never_catches_up(tmp_path: Path) -> None:
    for seed in range(2):
        for frac in (0.1, 1.0):
            write(tmp_path / f"s{frac}{seed}", make_record("scratch", frac, seed, 0.3 + 0.01 * seed))
            write(tmp_path / f"f{frac}{seed}", make_record("fine_tune", frac, seed, 0.9 + 0.01 * seed))
    text = line_starting(findings(summarize(load_results([tmp_path])[0])), "Scratch ")
    assert text.startswith("Scratch never catches up")


def test_negative_transfer_flagged_only_beyond_spread(grid: Path) -> None:
    lines = findings(summarize(load_results([grid])[0]))
    text = line_starting(lines, "Negative transfer")
    # 1.0: linear_probe 0.87 ± 0.01 vs scratch 0.92 ± 0.02 -> 0.88 < 0.90: flagged
    assert "linear_probe at fraction 1 " in text
    # 0.5: linear_probe 0.87 ± 0.01 vs scratch 0.885 ± 0.015 -> 0.88 >= 0.87: overlap
    assert "fraction 0.5" not in text
    assert "fine_tune" not in text


def test_no_negative_transfer_when_ranges_overlap(tmp_path: Path) -> None:
    # transfer mean is lower than scratch, but mean ± std ranges overlap
    for seed, (s, t) in enumerate([(0.80, 0.74), (0.90, 0.80)]):
        write(tmp_path / f"s{seed}", make_record("scratch", 0.5, seed, s))
        write(tmp_path / f"t{seed}", make_record("linear_probe", 0.5, seed, t))
    lines = findings(summarize(load_results([tmp_path])[0]))
    assert not any(ln.startswith("Negative transfer") for ln in lines), lines
    assert any(ln.startswith("No negative transfer") for ln in lines), lines


@pytest.mark.parametrize("n_scratch,n_transfer", [(1, 1), (1, 3), (3, 1)])
def test_no_negative_transfer_with_single_runs(tmp_path: Path, n_scratch: int,
                                               n_transfer: int) -> None:
    # transfer is far worse, but the rule needs n >= 2 on both sides
    for seed in range(n_scratch):
        write(tmp_path / f"s{seed}", make_record("scratch", 0.5, seed, 0.95 + 0.01 * seed))
    for seed in range(n_transfer):
        write(tmp_path / f"t{seed}", make_record("linear_probe", 0.5, seed, 0.10 + 0.01 * seed))
    lines = findings(summarize(load_results([tmp_path])[0]))
    assert not any(ln.startswith("Negative transfer (") for ln in lines), lines
    assert any(ln.startswith("Negative transfer not tested: linear_probe at fraction 0.5") for ln in lines), lines
    assert not any("significantly" in ln for ln in lines), lines


def test_report_states_rule_and_findings(grid: Path, tmp_path: Path) -> None:
    md = write_report([grid], tmp_path / "out").md.read_text()
    assert "## Findings" in md
    # the claims rest on a named test (issue #13: not on mean ± std ranges; issue #18: paired on the draws)
    assert "paired t-test" in md and "Welch's t-test" in md and "α = 0.05" in md
    assert "With 3 seeds per strategy and size" in md  # the actual count
    assert "linear_probe at fraction 1 " in md


# ---------------------------------------------------------------- problems and duplicates


def test_failed_and_unparseable_runs_listed_not_averaged(grid: Path) -> None:
    bad = grid / "bad"
    failed = write(bad / "failed", make_record(
        "fine_tune", 0.1, 3, 0.0, status="failed",
        error="CUDA out of memory\nTraceback (most recent call last): ...",
        config_hash="failed-hash"))
    running = write(bad / "running", make_record("fine_tune", 0.1, 4, 0.0, status="running",
                                                 config_hash="running-hash"))
    broken = write(bad / "broken", '{"status": "completed", "metrics": {"test/ac')
    df, problems = load_results([grid])
    assert len(df) == 36
    by_path = {p["path"]: p for p in problems}
    assert set(by_path) == {str(failed), str(running), str(broken)}
    assert by_path[str(failed)]["status"] == "failed"
    assert by_path[str(failed)]["error"] == "CUDA out of memory"
    assert by_path[str(running)]["status"] == "running"
    assert by_path[str(broken)]["status"] == "unparseable"
    r = row(summarize(df), "fine_tune", 0.1)
    assert r["n_runs"] == 3
    assert r["acc_mean"] == pytest.approx(np.mean(ACCS["fine_tune"][0.1]))

    paths = write_report([grid], grid / "report")
    md = paths.md.read_text()
    section = md.split("## Incomplete or failed runs", 1)[1]
    for p in (failed, running, broken):
        assert str(p) in section
    assert "CUDA out of memory" in section and "Traceback" not in section
    csv = pd.read_csv(paths.csv)
    assert len(csv) == 39  # every file, every status
    assert set(csv["status"]) == {"completed", "failed", "running", "unparseable"}
    assert int(csv["counted"].sum()) == 36
    assert {"test/acc", "test/f1_macro", "path", "wandb.id"} <= set(csv.columns)


def test_interrupted_runs_are_pending_not_failures(grid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A preempted or requeued run says ``interrupted``: listed as pending (it resumes), never counted as failed."""
    from transferlab.report.load import scan

    write(grid / "bad" / "interrupted", make_record(
        "fine_tune", 0.1, 5, 0.0, status="interrupted", config_hash="int-hash",
        error="interrupted (SIGUSR2: preempted, requeued, cancelled or at its time limit); it resumes ..."))
    write(grid / "bad" / "failed", make_record("fine_tune", 0.1, 6, 0.0, status="failed", error="boom",
                                               config_hash="failed-hash"))
    assert scan([grid]).problem_counts() == {"pending": 1, "failed": 1, "duplicate": 0}
    assert main([str(grid), "--out", str(grid / "report")]) == 0
    assert "1 failed/unreadable, 1 interrupted or running (pending), 0 duplicate" in capsys.readouterr().out
    md = (grid / "report" / "report.md").read_text()
    assert "1 interrupted or running (pending: they resume when run again), 1 failed/unreadable" in md
    section = md.split("## Incomplete or failed runs", 1)[1]
    assert "| interrupted (pending) | interrupted (SIGUSR2" in section


def test_duplicates_by_config_hash_counted_once(tmp_path: Path) -> None:
    old = write(tmp_path / "old", make_record("fine_tune", 0.1, 0, 0.10, config_hash="same"))
    new = write(tmp_path / "new", make_record("fine_tune", 0.1, 0, 0.90, config_hash="same"))
    write(tmp_path / "other", make_record("fine_tune", 0.1, 1, 0.80, config_hash="other"))
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    df, problems = load_results([tmp_path])
    assert len(df) == 2
    assert str(new) in set(df["path"]) and str(old) not in set(df["path"])
    r = row(summarize(df), "fine_tune", 0.1)
    assert r["n_runs"] == 2
    assert r["acc_mean"] == pytest.approx(0.85)
    assert [(p["path"], p["status"]) for p in problems] == [(str(old), "duplicate")]
    md = write_report([tmp_path], tmp_path / "out").md.read_text()
    assert "duplicate" in md and "counted once" in md


def test_one_table_per_combination(grid: Path, tmp_path: Path) -> None:
    for seed in range(2):
        write(grid / "vit" / f"s{seed}", make_record("fine_tune", 0.1, seed, 0.95,
                                                     backbone="vit_tiny", weights="source"))
    summary = summarize(load_results([grid])[0])
    assert summary.groupby(list(report.COMBO_KEYS)).ngroups == 2
    md = write_report([grid], tmp_path / "out").md.read_text()
    results = md.split("## Results", 1)[1].split("## Paired comparisons", 1)[0]
    assert results.count("### ") == 2
    assert "backbone=vit_tiny" in results and "backbone=resnet18" in results
    assert results.count("| strategy |") == 2


def test_scratch_is_baseline_for_each_weights_variant(grid: Path, tmp_path: Path) -> None:
    for seed in range(2):
        write(grid / "in1k" / f"s{seed}", make_record("fine_tune", 0.1, seed, 0.5 + 0.1 * seed,
                                                      weights="imagenet", config_hash=f"in{seed}"))
    df = load_results([grid])[0]
    summary = summarize(df)
    by_weights = {w: set(g["strategy"]) for w, g in summary.groupby("weights")}
    assert by_weights == {"source": {"scratch", "linear_probe", "fine_tune"},
                          "imagenet": {"scratch", "fine_tune"}}
    scr = summary[(summary["strategy"] == "scratch") & np.isclose(summary["size"], 0.1)]
    assert list(scr["n_runs"]) == [3, 3]
    assert list(scr["acc_mean"]) == pytest.approx([np.mean(ACCS["scratch"][0.1])] * 2)
    # imagenet fine_tune 0.55 ± 0.07 is beyond the spread above scratch 0.45 ± 0.05 at 0.1,
    # and at fraction 0.1 it is the best strategy for that combination
    lines = [ln for ln in findings(summary) if "weights=imagenet" in ln]
    assert any("At fraction 0.1, the best mean is fine_tune's" in ln for ln in lines), lines
    md = write_report([grid], tmp_path / "out").md.read_text()
    assert "38 completed run(s) averaged" in md


# ---------------------------------------------------------------- figure and CLI


def test_learning_curve_png_has_requested_pixel_size(grid: Path, tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    png = report.plot_learning_curve(summarize(load_results([grid])[0]), tmp_path / "lc.png",
                                     figsize=(11.0, 4.5), dpi=120)
    assert png.stat().st_size > 10_000
    img = mpimg.imread(png)
    assert img.shape[:2] == (round(4.5 * 120), round(11.0 * 120))
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_cli_writes_all_outputs(grid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(grid)]) == 0
    out_dir = grid / "report"
    for name in ("results.csv", "report.md", "learning_curve.png"):
        f = out_dir / name
        assert f.is_file() and f.stat().st_size > 0, name
    stdout = capsys.readouterr().out
    assert str(out_dir / "report.md") in stdout
    assert "linear_probe" in stdout
    assert "learning_curve.png" in (out_dir / "report.md").read_text()


def test_write_report_returns_paths(grid: Path, tmp_path: Path) -> None:
    paths = write_report([grid], tmp_path / "o")
    assert isinstance(paths, ReportPaths)
    assert paths.csv == tmp_path / "o" / "results.csv" and paths.csv.is_file()
    assert paths.png == tmp_path / "o" / "learning_curve.png" and paths.png.is_file()


def test_cli_without_results_fails_clearly(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) != 0
    err = capsys.readouterr().err
    assert "no result.json found" in err and str(tmp_path / "empty") in err
    assert "point transferlab-report at the folder" in err
    assert not (tmp_path / "empty" / "report").exists()

    assert main([str(tmp_path / "missing")]) != 0
    assert "no such folder" in capsys.readouterr().err


def test_cli_only_failed_runs_is_nonzero_but_reports(tmp_path: Path) -> None:
    write(tmp_path / "f", make_record("fine_tune", 0.1, 0, 0.0, status="failed", error="boom"))
    assert main([str(tmp_path), "--out", str(tmp_path / "o")]) != 0
    assert "boom" in (tmp_path / "o" / "report.md").read_text()
    assert not (tmp_path / "o" / "learning_curve.png").exists()


# ---------------------------------------------------------------- wandb


def _report_log(grid: Path, out: Path) -> ReportLog:
    found = scan_results([grid])
    analysis = analyse(found)
    paths = write_outputs(found, analysis, [grid], out)
    return ReportLog(analysis.summary, analysis.selection.frame, {"learning_curve": paths.png}, paths.md)


def test_log_report_to_wandb_offline(grid: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))  # the report's folder wins
    monkeypatch.setenv("WANDB_SILENT", "true")
    content = _report_log(grid, tmp_path / "out")
    where = log_report_to_wandb(content, "transferlab-test", "g1", tmp_path / "out")
    runs = list((tmp_path / "out").glob("wandb/offline-run-*"))
    assert where is not None and [where.dir] == runs and where.mode == "offline" and where.group == "g1"
    assert list(runs[0].glob("run-*.wandb")), list(runs[0].iterdir())
    assert list(runs[0].glob("files/media/images/**/*.png"))
    results = list(runs[0].glob("files/media/table/report/results*.table.json"))
    assert len(results) == 1
    logged = json.loads(results[0].read_text())
    assert "acc_mean" in logged["columns"] and len(logged["data"]) == len(content.summary)
    answer = json.loads(next(runs[0].glob("files/media/table/report/answer*.table.json")).read_text())
    assert answer["columns"][:2] == ["size", "recommended"] and answer["data"]


def test_log_report_to_wandb_never_raises(grid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", boom)
    with pytest.warns(RuntimeWarning, match="no network"):
        assert log_report_to_wandb(_report_log(grid, tmp_path / "out"), "p", None, tmp_path / "out") is None


def test_the_probe_l2_chosen_per_strategy_and_size_is_shown(tmp_path: Path) -> None:
    """The L-BFGS probe's chosen L2: median and range over seeds per (strategy, size); '-' for other runs."""
    for seed, (acc, l2) in enumerate([(0.8, 1e-3), (0.81, 1e-3), (0.82, 3e-3)]):
        write(tmp_path / f"lp{seed}", make_record("linear_probe", 0.1, seed, acc, probe={"solver": "lbfgs", "l2": l2}))
        write(tmp_path / f"lp1-{seed}", make_record("linear_probe", 1.0, seed, acc, probe={"solver": "lbfgs", "l2": 1e-4}))
        write(tmp_path / f"s{seed}", make_record("scratch", 0.1, seed, acc - 0.1))
    summary = summarize(load_results([tmp_path])[0])
    r = row(summary, "linear_probe", 0.1)
    assert (r["l2_median"], r["l2_min"], r["l2_max"]) == (1e-3, 1e-3, 3e-3)
    assert math.isnan(row(summary, "scratch", 0.1)["l2_median"])
    paths = write_report([tmp_path], tmp_path / "out")
    md = paths.md.read_text()
    lines = md.splitlines()
    assert "probe L2 (median, min–max over seeds) |" in next(ln for ln in lines if ln.startswith("| strategy"))
    assert next(ln for ln in lines if ln.startswith("| linear_probe | 0.1 ")).endswith("| 1.0e-03 [1.0e-03, 3.0e-03] |")
    assert next(ln for ln in lines if ln.startswith("| linear_probe | 1 ")).endswith("| 1.0e-04 |")
    assert next(ln for ln in lines if ln.startswith("| scratch | 0.1 ")).endswith("| - |")
    assert "*Probe L2* is the strength" in md
    assert "probe.l2" in pd.read_csv(paths.csv).columns
    for seed in range(3):  # without any probe record, no such column
        write(tmp_path / "plain" / f"s{seed}", make_record("scratch", 0.1, seed, 0.5))
    assert "probe L2" not in write_report([tmp_path / "plain"], tmp_path / "out2").md.read_text()
