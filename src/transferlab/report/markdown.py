"""The result tables and the text of ``report.md``."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.record import BASELINE_STRATEGY, DataSize
from transferlab.report.findings import CLAIM_RULE, combo_findings, findings, power_note
from transferlab.report.load import PENDING, count_problems, first_line
from transferlab.report.paired import comparison_rows
from transferlab.report.recommend import RECOMMEND_RULE, answer_rows, answers
from transferlab.report.selection import Selection
from transferlab.report.stats import fmt_ms
from transferlab.report.summary import combos
from transferlab.report.variation import sources_of_variation
from transferlab.report.views import CELL_LEGEND, DEPTH_COLUMN, LR_COLUMN, grid_edges, lr_free, view_rows

CAPTION = (
    "Std is the sample standard deviation over seeds; the 95% interval is the two-sided "
    f"Student-t confidence interval for the mean (n/a with a single run). `{BASELINE_STRATEGY}` runs "
    "(random init) appear as the baseline in every `weights` combination of the same "
    "experiment, dataset, backbone and head."
)

L2_CAPTION = (
    "*Probe L2* is the strength λ the L-BFGS linear probe chose on the validation split (it minimises "
    "mean cross-entropy + λ/2·‖W‖²; scikit-learn's C = 1/(λ·n_train))."
)


def _fmt_size(kind: str, size: float, mixed: bool) -> str:
    v = f"{size:g}"
    return f"{kind}={v}" if mixed else v


def fmt_l2(median: float, low: float, high: float) -> str:
    """The chosen L2 strength over seeds: ``1e-03``, or ``3.2e-04 [1.0e-04, 1.0e-03]`` when seeds differ."""
    if pd.isna(median):
        return "-"
    return f"{median:.1e}" if low == high else f"{median:.1e} [{low:.1e}, {high:.1e}]"


def _table_row(r: pd.Series, mixed: bool) -> list[str]:
    ci = "n/a" if pd.isna(r["acc_ci_low"]) else f"[{r['acc_ci_low']:.4f}, {r['acc_ci_high']:.4f}]"
    return [
        str(r["strategy"]),
        _fmt_size(r["size_kind"], r["size"], mixed),
        "n/a" if pd.isna(r["n_train"]) else f"{r['n_train']:.0f}",
        fmt_ms(r["acc_mean"], r["acc_std"]),
        ci,
        fmt_ms(r["f1_mean"], r["f1_std"]),
        str(int(r["n_runs"])),
        "n/a" if pd.isna(r["trainable_params"]) else f"{r['trainable_params']:,.0f}",
        "n/a" if pd.isna(r["train_time_s"]) else f"{r['train_time_s']:.1f}",
    ] + ([] if "val_mean" not in r.index else [
        "n/a" if pd.isna(r["val_mean"]) else f"{r['val_mean']:.4f}",
        str(r["configs"]),
        str(r["selected_hparams"]),
        "n/a" if pd.isna(r["grid_time_s"]) else f"{r['grid_time_s']:.1f}",
    ])


SELECTION_HEADER = ["val metric (selected, mean)", "configs compared", "selected", "tuning-grid train time (mean s)"]


def table_rows(sub: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of one combination's results table."""
    kinds = set(sub["size_kind"])
    mixed = len(kinds) > 1
    size_header = "size" if mixed else ("per class" if kinds == {"per_class"} else "fraction")
    header = ["strategy", size_header, "n_train (mean)", "test acc (mean ± std)", "test acc 95% CI",
              "test macro-F1 (mean ± std)", "n runs", "trainable params", "train time (mean s)"]
    header += SELECTION_HEADER if "val_mean" in sub.columns else []
    rows = [_table_row(r, mixed) for _, r in sub.iterrows()]
    if "l2_median" in sub and sub["l2_median"].notna().any():  # an L-BFGS probe ran: the L2 it chose on val
        header.append("probe L2 (median, min–max over seeds)")  # no [letters]: rich reads them as markup
        for row, (_, r) in zip(rows, sub.iterrows()):
            row.append(fmt_l2(r["l2_median"], r["l2_min"], r["l2_max"]))
    return header, rows


def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (``|`` escaped, newlines flattened)."""
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class ReportContent:
    """What ``report.md`` says: the selected summary, the selection, the held-fixed views, the problems."""

    summary: pd.DataFrame  # summarize() of the selected runs
    selection: Selection
    lr_view: pd.DataFrame  # views.held_fixed(selection, "lr")
    depth_view: pd.DataFrame  # views.depth_strategies(views.held_fixed(selection, "depth"))
    problems: list[dict[str, str]]
    dirs: list[Path]
    n_files: int
    figures: dict[str, str] = field(default_factory=dict)  # "learning_curve" | "sensitivity" | "freeze_depth" -> file name
    n_pruned: int = 0  # runs a rung or a pruner stopped (load.Scan.n_pruned)


def _answer_section(c: ReportContent) -> list[str]:
    md = ["## Answer: which strategy at which training-set size", ""]
    if c.summary.empty:
        return md + ["No completed runs, so no answer.", ""]
    return md + [md_table(*answer_rows(answers(c.summary))), "", RECOMMEND_RULE + " " + power_note(c.summary), ""]


def _counts_line(c: ReportContent) -> str:
    counts = count_problems(c.problems)
    frame = c.selection.frame
    n_done = int(frame["counted"].astype(bool).sum()) if not frame.empty else 0
    n_sel = len(c.selection.selected)
    return (f"{c.n_files} result file(s) found: {n_sel} completed run(s) averaged (the configuration selected "
            f"on `{c.selection.metric}` in each cell; {n_done - n_sel} other completed configuration(s) compared, "
            f"not averaged), {counts['pending']} interrupted or running (pending: they resume when "
            f"run again), {counts['failed']} failed/unreadable, {counts['duplicate']} duplicate(s) ignored"
            + (f", {c.n_pruned} pruned at a rung (compared in their cells, never selected)." if c.n_pruned else "."))


def _results_section(c: ReportContent, groups: list[tuple[str, pd.DataFrame]]) -> list[str]:
    md = ["## Results (configurations selected on validation)", "", c.selection.rule, ""]
    if not groups:
        md += ["No completed runs.", ""]
    for label, sub in groups:
        md += [f"### {label}", ""] if len(groups) > 1 else [f"Combination: {label}.", ""]
        md += [md_table(*table_rows(sub)), "", sources_of_variation(sub), ""]
    probed = any("l2_median" in sub and sub["l2_median"].notna().any() for _, sub in groups)
    return md + [CAPTION + (f" {L2_CAPTION}" if probed else ""), ""]


def _view_section(title: str, text: str, view: pd.DataFrame, column: str, png: str | None) -> list[str]:
    md = [f"## {title}", "", f"{text} In the table, {CELL_LEGEND}.", ""]
    groups = combos(view)
    for label, sub in groups:
        md += ([f"### {label}", ""] if len(groups) > 1 else []) + [md_table(*view_rows(sub, column)), ""]
    return md + ([f"![{title}]({png})", ""] if png else [])


def _lr_free_note(c: ReportContent) -> str:
    free = lr_free(c.selection)
    return (f" Left out: {', '.join(free)}, which took no optimizer step (its head is solved), so it used no LR."
            if free else "")


def _views(c: ReportContent) -> list[str]:
    md: list[str] = []
    if not c.lr_view.empty:
        md += _view_section(
            "Sensitivity to the learning rate",
            "At each `optimizer.lr` every seed's configuration is selected on validation over the other "
            "hyperparameters; the figure shows test (solid) and validation (dashed) accuracy, mean over seeds, ± std shaded. "
            "A test accuracy that falls at high LR is the pretrained features being destroyed (catastrophic "
            "forgetting); one that falls at low LR is under-training within the step budget. A strategy run at "
            "one LR is one point." + _lr_free_note(c), c.lr_view, LR_COLUMN, c.figures.get("sensitivity"))
        edges = grid_edges(c.lr_view, LR_COLUMN)
        md += (["**At the grid's edge.**", ""] + [f"- {line}" for line in edges] + [""]) if edges else []
    if not c.depth_view.empty:
        md += _view_section(
            "How many top blocks to fine-tune",
            "`strategy.unfreeze_top_k` (`all`: null, every block trains); at each depth every seed's configuration "
            "(e.g. its LR) is selected on validation like any grid point; the figure shows the test accuracy, mean "
            "± std over seeds, one line per training-set size.",
            c.depth_view, DEPTH_COLUMN, c.figures.get("freeze_depth"))
    return md


PAIRED_CAPTION = (
    "At each size every pair of strategies, the higher mean first (A): the mean over seeds of A's test accuracy "
    "minus B's on the same draw, with its two-sided 95% Student-t interval; the one-sided paired t-test "
    "(`scipy.stats.ttest_rel`) for A being better; P(A>B), the share of the draws on which A beat B (a tie "
    "counts half; Bouthillier et al. 2021). Where the runs cannot be paired the row says why, gives the "
    "difference of the means and Welch's one-sided p-value (`scipy.stats.ttest_ind(..., equal_var=False)`)."
)


def _paired_section(groups: list[tuple[str, pd.DataFrame]]) -> list[str]:
    if not groups:
        return []
    md = ["## Paired comparisons (the same draws)", "", PAIRED_CAPTION, ""]
    for label, sub in groups:
        md += ([f"### {label}", ""] if len(groups) > 1 else []) + [md_table(*comparison_rows(sub)), ""]
    return md


def _findings_section(summary: pd.DataFrame, groups: list[tuple[str, pd.DataFrame]]) -> list[str]:
    md = ["## Findings", "", f"{CLAIM_RULE} {power_note(summary)}", ""]
    if len(groups) > 1:
        for label, sub in groups:
            md += [f"### {label}", ""] + [f"- {line}" for line in combo_findings(sub)] + [""]
    else:
        md += [f"- {line}" for line in findings(summary)] + [""]
    return md


def _cells_table(cells: pd.DataFrame) -> str:
    rows = [[str(r["strategy"]), DataSize(r["size_kind"], float(r["size"])).describe(),
             "n/a" if pd.isna(r["seed"]) else f"{r['seed']:g}", str(r["n_configs"]), first_line(r["error"])]
            for _, r in cells.iterrows()]
    return md_table(["strategy", "size", "seed", "configurations tried", "first error"], rows)


def _problems_section(problems: list[dict[str, str]], cells: pd.DataFrame) -> list[str]:
    md = ["## Incomplete or failed runs", ""]
    for status, text in (("failed", "Cells where every configuration failed (nothing to select, no result):"),
                         ("pending", "Pending cells (no completed configuration yet; some are running or "
                                     "interrupted and resume when relaunched):")):
        sub = cells[cells["status"] == status]
        if len(sub):
            md += [text, "", _cells_table(sub), ""]
    if not problems:
        return md + ["None.", ""]
    n_dup = count_problems(problems)["duplicate"]
    if n_dup:
        md += [f"{n_dup} duplicate record(s) share a `config_hash` with a newer record; "
               "each configuration is counted once (the newest by file mtime).", ""]
    rows = [[f"`{p['path']}`", f"{p['status']} (pending)" if p["status"] in PENDING else p["status"],
             first_line(p["error"])] for p in problems]
    return md + [md_table(["path", "status", "error"], rows), ""]


def render_markdown(c: ReportContent) -> str:
    """The text of ``report.md``: the answer first, then the evidence."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = ["# transferlab report", ""] + _answer_section(c) + [
        f"Generated {now} from: " + ", ".join(f"`{d}`" for d in c.dirs), "", _counts_line(c), ""]
    groups = combos(c.summary) if not c.summary.empty else []
    md += _results_section(c, groups) + _paired_section(groups) + _views(c) + _findings_section(c.summary, groups)
    md += _problems_section(c.problems, c.selection.unselected)
    if c.figures.get("learning_curve"):
        md += ["## Learning curve (selected configurations, each draw a dot)", "", f"![learning curve]({c.figures['learning_curve']})", ""]
    return "\n".join(md)
