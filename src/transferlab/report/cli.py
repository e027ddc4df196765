"""The ``transferlab-report`` command: scan once, select on validation, write results.csv, report.md and the
figures (learning_curve.png; sensitivity.png and freeze_depth.png when the runs vary in LR or depth), print."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from transferlab.errors import debugging
from transferlab.files import atomic_write
from transferlab.record import RESULT_FILE
from transferlab.report.findings import findings
from transferlab.report.load import Scan, scan
from transferlab.report.markdown import ReportContent, md_table, render_markdown, table_rows
from transferlab.report.plot import plot_freeze_depth, plot_learning_curve, plot_sensitivity
from transferlab.report.recommend import answer_rows, answers
from transferlab.report.selection import DEFAULT_METRIC, Selection, SelectionMetricError, select_runs, summary_extras
from transferlab.report.summary import combos, summarize
from transferlab.report.views import DEPTH_COLUMN, LR_COLUMN, depth_strategies, held_fixed, varies
from transferlab.report.wandb_runs import apply_selection, mark_selected, sync_patterns
from transferlab.report.wandb_table import ReportLog, log_report_to_wandb, runs_group

OUTPUT_MODE = 0o644  # report files are for everyone to read
RESULTS_CSV = "results.csv"  # every run found, with ``selected``: what --wandb-apply-selection reads back


class NoResultsError(FileNotFoundError):
    """Raised when no ``result.json`` exists below the given folders."""


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put its outputs (a figure is None when it was not drawn)."""

    out: Path
    csv: Path
    md: Path
    png: Path | None  # learning_curve.png, None without completed runs
    sensitivity: Path | None = None  # sensitivity.png, None without LR variation
    freeze_depth: Path | None = None  # freeze_depth.png, None without freeze-depth variation


@dataclass(frozen=True)
class Analysis:
    """What the report says, before anything is written."""

    selection: Selection
    summary: pd.DataFrame  # the selected runs, summarised
    lr_view: pd.DataFrame
    depth_view: pd.DataFrame  # only the (combination, strategy) pairs whose runs differ in depth


def scan_results(dirs: list[Path]) -> Scan:
    """:func:`~transferlab.report.load.scan`, raising :class:`NoResultsError` when nothing is found."""
    found = scan(dirs)
    if not found.entries:
        raise NoResultsError(f"no {RESULT_FILE} found under: {', '.join(str(d) for d in dirs)}")
    return found


def analyse(found: Scan, metric: str = DEFAULT_METRIC, explicit: bool = False, higher: bool | None = None) -> Analysis:
    """Select on ``metric`` in every cell (see :func:`select_runs`), then summarise; raises SelectionMetricError
    before anything is written."""
    sel = select_runs(found, metric, explicit, higher)
    summary = summarize(sel.selected, extra=summary_extras())
    return Analysis(sel, summary, held_fixed(sel, LR_COLUMN), depth_strategies(held_fixed(sel, DEPTH_COLUMN)))


def _write_text(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data), mode=OUTPUT_MODE)


def _results_csv(found: Scan, selection: Selection) -> str:
    """Every file found (every status), with ``selected`` after ``counted``."""
    frame = found.frame()
    frame.insert(frame.columns.get_loc("counted") + 1, "selected", frame["path"].isin(selection.selected_paths))
    return frame.to_csv(index=False)


def write_outputs(found: Scan, analysis: Analysis, dirs: list[Path], out: Path) -> ReportPaths:
    """Write results.csv, report.md and (with completed runs) the figures into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / RESULTS_CSV, out / "report.md"
    _write_text(csv_path, _results_csv(found, analysis.selection))
    png = sens = depth = None
    if not analysis.summary.empty:
        png = plot_learning_curve(analysis.summary, out / "learning_curve.png")
    if varies(analysis.lr_view, LR_COLUMN):
        sens = plot_sensitivity(analysis.lr_view, out / "sensitivity.png")
    if not analysis.depth_view.empty:
        depth = plot_freeze_depth(analysis.depth_view, out / "freeze_depth.png")
    figures = {k: p.name for k, p in (("learning_curve", png), ("sensitivity", sens), ("freeze_depth", depth)) if p}
    content = ReportContent(analysis.summary, analysis.selection, analysis.lr_view, analysis.depth_view,
                            found.problems(), dirs, len(found.entries), figures, found.n_pruned())
    _write_text(md_path, render_markdown(content))
    return ReportPaths(out=out, csv=csv_path, md=md_path, png=png, sensitivity=sens, freeze_depth=depth)


def write_report(dirs: list[Path], out: Path, select_metric: str | None = None, higher: bool | None = None) -> ReportPaths:
    """Scan ``dirs``, select on ``select_metric`` (default ``val/acc_best``) and write the report into ``out``.

    Raises :class:`NoResultsError` when no result.json is found and SelectionMetricError for a metric
    that cannot select (nothing is written then). Without any completed run the figures are skipped.
    """
    dirs = [Path(d) for d in dirs]
    found = scan_results(dirs)
    analysis = analyse(found, select_metric or DEFAULT_METRIC, explicit=select_metric is not None, higher=higher)
    return write_outputs(found, analysis, dirs, Path(out))


def print_summary(summary: pd.DataFrame) -> None:
    """The results tables on stdout (rich tables; full width when piped)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a project dependency
        for label, sub in combos(summary):
            print(f"\n{label}\n" + md_table(*table_rows(sub)))
        return
    console = Console()
    if not console.is_terminal:  # piped/captured: do not squeeze the table into 80 columns
        console = Console(width=200)
    for label, sub in combos(summary):
        header, rows = table_rows(sub)
        table = Table(title=label)
        for h in header:
            table.add_column(h, justify="left" if h == "strategy" else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``transferlab-report``."""
    p = argparse.ArgumentParser(
        prog="transferlab-report",
        description="Aggregate result.json files of transferlab runs into a CSV, a markdown report and "
                    "figures; in each cell the configuration with the best validation metric is reported.")
    p.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                   help="folders searched recursively for result.json")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: DIR/report for the first DIR)")
    p.add_argument("--select-metric", default=None, metavar="METRIC",
                   help=f"validation metric that selects each cell's configuration (default {DEFAULT_METRIC})")
    p.add_argument("--select-mode", choices=("max", "min"), default=None,
                   help="whether the highest or lowest metric wins (default: min for a loss or error, else max)")
    p.add_argument("--wandb-project", default=None,
                   help="also log the report to a W&B run of this project (job_type report), kept in OUT/wandb/")
    p.add_argument("--wandb-group", default=None,
                   help="W&B group of the report's run (default: the group of the runs, their sweep's)")
    p.add_argument("--no-wandb-mark", action="store_true",
                   help="do not write selected: true/false into the summaries of the runs' online W&B runs")
    p.add_argument("--wandb-apply-selection", type=Path, default=None, metavar="REPORT",
                   help="only write the selection of the report in REPORT (its folder or results.csv) into "
                        "the runs' W&B summaries, through W&B's API: for offline runs, after `wandb sync`")
    return p


def _print_outcome(a: Analysis, counts: dict[str, int], paths: ReportPaths, dirs: list[Path]) -> None:
    if a.summary.empty:
        print(f"warning: none of the runs under {', '.join(map(str, dirs))} completed; "
              f"see the failures listed in {paths.md}.", file=sys.stderr)
    else:
        print("\nAnswer:\n" + md_table(*answer_rows(answers(a.summary))))
        print_summary(a.summary)
        for line in findings(a.summary):
            print(f"- {line}")
    if any(counts.values()):
        print(f"{counts['failed']} failed/unreadable, {counts['pending']} interrupted or running (pending), "
              f"{counts['duplicate']} duplicate record(s); see {paths.md}")
    if counts["pending"]:
        print("pending runs resume when the command that started them runs again (a sweep skips its completed jobs "
              f"and resumes the rest); {paths.md} lists which are still running and which were killed")
    for path in (paths.csv, paths.md, paths.png, paths.sensitivity, paths.freeze_depth):
        if path is not None:
            print(f"wrote {path}")


def _log_report_run(args: argparse.Namespace, a: Analysis, paths: ReportPaths) -> None:
    """The report's own W&B run (``--wandb-project``), in the runs' group unless ``--wandb-group`` says
    otherwise; prints where it is and how to upload it."""
    figures = {"learning_curve": paths.png, "sensitivity": paths.sensitivity, "freeze_depth": paths.freeze_depth}
    content = ReportLog(a.summary, a.selection.frame, {k: v for k, v in figures.items() if v is not None}, paths.md)
    group = args.wandb_group or runs_group(a.selection.frame)
    run = log_report_to_wandb(content, args.wandb_project, group, paths.out)
    if run is None:
        return
    print(f"W&B: the report's run {run.id} (group {run.group or '-'}, job_type report) is in {run.dir}")
    print(f"W&B: see it at {run.url}" if run.url else f"W&B: upload it with: wandb sync {run.dir}")


def _mark_wandb_runs(selection: Selection, out: Path) -> None:
    """``selected`` into the online runs' summaries; for offline runs, the commands that do it once uploaded."""
    result = mark_selected(selection.frame)
    if result.marked:
        print(f"W&B: marked {result.marked} online run(s) selected/not selected in {result.seconds:.1f} s")
    if result.offline:
        print(f"W&B: {len(result.offline)} offline run(s); their selection is in {out / RESULTS_CSV}. Upload "
              "them, then write it into their summaries:")
        print(f"  wandb sync {' '.join(sync_patterns(result.offline))}")
        print(f"  transferlab-report --wandb-apply-selection {out}")


def _apply_selection(report: Path) -> int:
    """``--wandb-apply-selection``: 0 when every run with a W&B id was marked, 1 otherwise, 2 without a report."""
    csv = report / RESULTS_CSV if report.is_dir() else report
    if not csv.is_file():
        print(f"error: no {RESULTS_CSV} in {report}. Pass the folder transferlab-report wrote (its --out).", file=sys.stderr)
        return 2
    result = apply_selection(csv)
    print(f"W&B: marked {result.marked} run(s) selected/not selected in {result.seconds:.1f} s"
          + (f"; {len(result.failed)} failed (first: {result.failed[0]})" if result.failed else ""))
    return 1 if result.failed else 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 0 on success, 1 without completed runs, 2 on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.wandb_apply_selection is not None:
        return _apply_selection(args.wandb_apply_selection)
    if not args.dirs:
        parser.error("give the folder(s) that hold your runs' outputs (DIR)")
    missing = [d for d in args.dirs if not d.exists()]
    if missing:
        print(f"error: no such folder: {', '.join(map(str, missing))}. "
              "Pass the folder(s) that hold your runs' outputs.", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else (
        args.dirs[0] / "report" if args.dirs[0].is_dir() else args.dirs[0].parent / "report")
    try:
        found = scan_results(args.dirs)
        analysis = analyse(found, args.select_metric or DEFAULT_METRIC, explicit=args.select_metric is not None,
                           higher=None if args.select_mode is None else args.select_mode == "max")
    except NoResultsError as exc:
        print(f"error: {exc}.\nNothing to report: point transferlab-report at the folder(s) where "
              f"your runs wrote their {RESULT_FILE} files (e.g. the Hydra `outputs/` or "
              f"`multirun/` folder), or run an experiment first.", file=sys.stderr)
        return 2
    except SelectionMetricError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        paths = write_outputs(found, analysis, args.dirs, out)
    except OSError as exc:
        if debugging():
            raise
        where = exc.filename or out
        print(f"error: cannot write the report into {out} ({where}: {exc.strerror or exc}). "
              "Fix: pass --out DIR, a folder you can write.", file=sys.stderr)
        return 2
    _print_outcome(analysis, found.problem_counts(), paths, args.dirs)
    if args.wandb_project and not analysis.summary.empty:
        _log_report_run(args, analysis, paths)
    if not args.no_wandb_mark:
        _mark_wandb_runs(analysis.selection, paths.out)
    return 0 if not analysis.summary.empty else 1
