"""The ``transferlab-report`` command: scan once, write results.csv, report.md and learning_curve.png, print."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from transferlab.files import atomic_write
from transferlab.record import RESULT_FILE
from transferlab.report.findings import findings
from transferlab.report.load import Scan, scan
from transferlab.report.markdown import md_table, render_markdown, table_rows
from transferlab.report.plot import plot_learning_curve
from transferlab.report.summary import combos, summarize
from transferlab.report.wandb_table import log_report_to_wandb

OUTPUT_MODE = 0o644  # report files are for everyone to read


class NoResultsError(FileNotFoundError):
    """Raised when no ``result.json`` exists below the given folders."""


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put its outputs (``png`` is None without completed runs)."""

    out: Path
    csv: Path
    md: Path
    png: Path | None


def scan_results(dirs: list[Path]) -> Scan:
    """:func:`~transferlab.report.load.scan`, raising :class:`NoResultsError` when nothing is found."""
    found = scan(dirs)
    if not found.entries:
        raise NoResultsError(f"no {RESULT_FILE} found under: {', '.join(str(d) for d in dirs)}")
    return found


def _write_text(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data), mode=OUTPUT_MODE)


def write_outputs(found: Scan, summary: pd.DataFrame, dirs: list[Path], out: Path) -> ReportPaths:
    """Write results.csv, report.md and (with completed runs) learning_curve.png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "results.csv", out / "report.md"
    _write_text(csv_path, found.frame().to_csv(index=False))
    png_path: Path | None = None
    if not summary.empty:
        png_path = plot_learning_curve(summary, out / "learning_curve.png")
    problems = found.problems()
    n_completed = len(found.entries) - len(problems)
    _write_text(md_path, render_markdown(summary, problems, dirs, len(found.entries), n_completed,
                                         png_path.name if png_path else None))
    return ReportPaths(out=out, csv=csv_path, md=md_path, png=png_path)


def write_report(dirs: list[Path], out: Path) -> ReportPaths:
    """Scan ``dirs`` and write results.csv, report.md and learning_curve.png into ``out``.

    Raises :class:`NoResultsError` when no result.json is found. Without any
    completed run the figure is skipped (``png`` is None).
    """
    dirs = [Path(d) for d in dirs]
    found = scan_results(dirs)
    return write_outputs(found, summarize(found.runs()), dirs, Path(out))


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
        description="Aggregate result.json files of transferlab runs into a CSV, a markdown "
                    "report and a learning-curve figure.")
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR",
                   help="folders searched recursively for result.json")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: DIR/report for the first DIR)")
    p.add_argument("--wandb-project", default=None,
                   help="also log the summary table and figure to this W&B project")
    p.add_argument("--wandb-group", default=None, help="W&B group for the report run")
    return p


def _print_outcome(summary: pd.DataFrame, counts: dict[str, int], paths: ReportPaths, dirs: list[Path]) -> None:
    if summary.empty:
        print(f"warning: none of the runs under {', '.join(map(str, dirs))} completed; "
              f"see the failures listed in {paths.md}.", file=sys.stderr)
    else:
        print_summary(summary)
        for line in findings(summary):
            print(f"- {line}")
    if any(counts.values()):
        print(f"{counts['failed']} failed/unreadable, {counts['pending']} interrupted or running (pending), "
              f"{counts['duplicate']} duplicate record(s); see {paths.md}")
    print(f"wrote {paths.csv}")
    print(f"wrote {paths.md}")
    if paths.png is not None:
        print(f"wrote {paths.png}")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 0 on success, 1 without completed runs, 2 on bad input."""
    args = build_parser().parse_args(argv)
    missing = [d for d in args.dirs if not d.exists()]
    if missing:
        print(f"error: no such folder: {', '.join(map(str, missing))}. "
              "Pass the folder(s) that hold your runs' outputs.", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else (
        args.dirs[0] / "report" if args.dirs[0].is_dir() else args.dirs[0].parent / "report")
    try:
        found = scan_results(args.dirs)
    except NoResultsError as exc:
        print(f"error: {exc}.\nNothing to report: point transferlab-report at the folder(s) where "
              f"your runs wrote their {RESULT_FILE} files (e.g. the Hydra `outputs/` or "
              f"`multirun/` folder), or run an experiment first.", file=sys.stderr)
        return 2
    summary = summarize(found.runs())
    paths = write_outputs(found, summary, args.dirs, out)
    _print_outcome(summary, found.problem_counts(), paths, args.dirs)
    if args.wandb_project and not summary.empty:
        log_report_to_wandb(summary, paths.png, args.wandb_project, args.wandb_group)
    return 0 if not summary.empty else 1
