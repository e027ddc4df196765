"""The report's own W&B run, in the sweep's group with ``job_type=report``: the results, the answer and the
selection as ``wandb.Table``s, the figures as images, test accuracy against training-set size per strategy as
a native W&B line plot, and the report's markdown (an HTML panel and the file itself).

The run is written inside the report's folder (``<out>/wandb/``): offline unless a key and the network are
there (``wandb_access``), and then ``wandb sync <its folder>`` uploads it. Its table ``report/selection``
(every completed run's W&B id and whether it was selected) is what ``--wandb-apply-selection`` writes into
the runs' summaries (``report.wandb_runs``). W&B trouble is a warning, never an error.
"""

from __future__ import annotations

import html
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.report.paired import PER_SEED
from transferlab.report.recommend import answer_rows, answers
from transferlab.report.summary import combos
from transferlab.report.wandb_runs import SELECTED
from transferlab.wandb_access import wandb_mode

#: the columns of ``report/selection``: which W&B run each completed run is, its cell and configuration
SELECTION_COLUMNS = ("wandb.id", "wandb.name", "wandb.group", "wandb.project", "wandb.entity", "wandb.mode",
                     "strategy", "size_kind", "size", "n_train", "seed", "config", "score", SELECTED, "path")


@dataclass(frozen=True)
class ReportLog:
    """What the report logs to its W&B run."""

    summary: pd.DataFrame  # the selected runs, summarised (the results tables)
    selection: pd.DataFrame  # ``Selection.frame``: every configuration tried, ``selected`` flagged
    figures: Mapping[str, Path] = field(default_factory=dict)  # name → png
    markdown: Path | None = None  # report.md


@dataclass(frozen=True)
class ReportRun:
    """Where :func:`log_report_to_wandb` wrote the report's run."""

    id: str
    mode: str  # offline | online
    dir: Path  # the run's folder: what ``wandb sync`` takes
    group: str | None
    url: str | None = None  # online only


def selection_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The completed runs of ``frame`` (``Selection.frame``) with their W&B run and whether they were selected."""
    if frame.empty or "counted" not in frame:
        return pd.DataFrame(columns=list(SELECTION_COLUMNS))
    done = frame[frame["counted"].astype(bool)]
    return done.reindex(columns=list(SELECTION_COLUMNS))


def runs_group(frame: pd.DataFrame) -> str | None:
    """The one W&B group the completed runs of ``frame`` share (their sweep's), or None."""
    groups = set(selection_table(frame)["wandb.group"].dropna()) - {""}
    return next(iter(groups)) if len(groups) == 1 else None


def _table(wandb: Any, df: pd.DataFrame) -> Any:
    plain = df.astype(object).where(df.notna(), None)
    return wandb.Table(dataframe=plain)


def _accuracy_plots(wandb: Any, summary: pd.DataFrame) -> dict[str, Any]:
    """Per combination: mean test accuracy against the mean training-set size, one line per strategy."""
    plots: dict[str, Any] = {}
    parts = combos(summary)
    for i, (label, sub) in enumerate(parts):
        lines = [(str(s), rows.sort_values("n_train")) for s, rows in sub.groupby("strategy", sort=True)]
        key = "report/test_acc_by_n_train" + (f"/{i}" if len(parts) > 1 else "")
        plots[key] = wandb.plot.line_series(
            xs=[[float(x) for x in rows["n_train"]] for _, rows in lines],
            ys=[[float(y) for y in rows["acc_mean"]] for _, rows in lines],
            keys=[s for s, _ in lines], title=f"test accuracy by training-set size — {label}", xname="n_train")
    return plots


def _payload(wandb: Any, content: ReportLog) -> dict[str, Any]:
    header, rows = answer_rows(answers(content.summary))
    payload: dict[str, Any] = {
        "report/results": _table(wandb, content.summary.drop(columns=[PER_SEED], errors="ignore")),
        "report/answer": wandb.Table(columns=header, data=rows),
        "report/selection": _table(wandb, selection_table(content.selection)),
        **_accuracy_plots(wandb, content.summary),
    }
    for name, path in content.figures.items():
        if path is not None and Path(path).exists():
            payload[f"report/{name}"] = wandb.Image(str(path))
    if content.markdown is not None and content.markdown.exists():
        text = html.escape(content.markdown.read_text(encoding="utf-8"))
        payload["report/markdown"] = wandb.Html(f"<pre style='white-space: pre-wrap'>{text}</pre>")
    return payload


def _start(wandb: Any, project: str, group: str | None, out: Path) -> Any:
    out.mkdir(parents=True, exist_ok=True)
    settings = wandb.Settings(console="off", save_code=False, disable_git=True, silent=True)
    return wandb.init(project=project, group=group, job_type="report", dir=str(out), mode=wandb_mode(None),
                      name=f"report-{out.name}-{time.strftime('%Y%m%d-%H%M%S')}", reinit="finish_previous",
                      settings=settings)


def log_report_to_wandb(content: ReportLog, project: str, group: str | None, out: Path) -> ReportRun | None:
    """Log the report to a new W&B run (``job_type=report``, ``group``) kept in ``out/wandb/``; where it went,
    or None (with a warning) when W&B failed: the report's files are unaffected."""
    run = None
    try:
        import wandb

        run = _start(wandb, project, group, Path(out))
        run.log(_payload(wandb, content))
        if content.markdown is not None and content.markdown.exists():
            run.save(str(content.markdown), base_path=str(content.markdown.parent), policy="now")
        where = ReportRun(run.id, "offline" if run.offline else "online", Path(run.dir).parent, group,
                          None if run.offline else run.url)
        run.finish()
        run = None
        wandb.teardown()  # a later wandb.init in this process reads its settings afresh
        return where
    except Exception as exc:  # noqa: BLE001 - reporting must not break on wandb trouble
        warnings.warn(f"could not log the report to wandb ({type(exc).__name__}: {exc}); "
                      "the local report files are unaffected", RuntimeWarning, stacklevel=2)
        return None
    finally:
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass
