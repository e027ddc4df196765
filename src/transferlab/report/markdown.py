"""The result tables and the text of ``report.md``."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.report.findings import CATCH_UP_RULE, NEGATIVE_TRANSFER_RULE, combo_findings, findings
from transferlab.report.load import DUPLICATE, PENDING, first_line
from transferlab.report.stats import fmt_ms
from transferlab.report.summary import SCRATCH, combos

CAPTION = (
    "Std is the sample standard deviation over seeds; the 95% interval is the two-sided "
    f"Student-t confidence interval for the mean (n/a with a single run). `{SCRATCH}` runs "
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
    ]


def table_rows(sub: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of one combination's results table."""
    kinds = set(sub["size_kind"])
    mixed = len(kinds) > 1
    size_header = "size" if mixed else ("per class" if kinds == {"per_class"} else "fraction")
    header = ["strategy", size_header, "n_train (mean)", "test acc (mean ± std)", "test acc 95% CI",
              "test macro-F1 (mean ± std)", "n runs", "trainable params", "train time (mean s)"]
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


def _results_section(groups: list[tuple[str, pd.DataFrame]]) -> list[str]:
    md = ["## Results", ""]
    if not groups:
        md += ["No completed runs.", ""]
    for label, sub in groups:
        md += [f"### {label}", ""] if len(groups) > 1 else [f"Combination: {label}.", ""]
        md += [md_table(*table_rows(sub)), ""]
    probed = any("l2_median" in sub and sub["l2_median"].notna().any() for _, sub in groups)
    return md + [CAPTION + (f" {L2_CAPTION}" if probed else ""), ""]


def _findings_section(summary: pd.DataFrame, groups: list[tuple[str, pd.DataFrame]]) -> list[str]:
    md = ["## Findings", "", f"Rule for negative transfer: {NEGATIVE_TRANSFER_RULE}. {CATCH_UP_RULE}", ""]
    if len(groups) > 1:
        for label, sub in groups:
            md += [f"### {label}", ""] + [f"- {line}" for line in combo_findings(sub)] + [""]
    else:
        md += [f"- {line}" for line in findings(summary)] + [""]
    return md


def _problems_section(problems: list[dict[str, str]]) -> list[str]:
    md = ["## Incomplete or failed runs", ""]
    if not problems:
        return md + ["None.", ""]
    n_dup = sum(p["status"] == DUPLICATE for p in problems)
    if n_dup:
        md += [f"{n_dup} duplicate record(s) share a `config_hash` with a newer record; "
               "each configuration is counted once (the newest by file mtime).", ""]
    rows = [[f"`{p['path']}`", p["status"], first_line(p["error"])] for p in problems]
    return md + [md_table(["path", "status", "error"], rows), ""]


def render_markdown(summary: pd.DataFrame, problems: list[dict[str, str]], dirs: list[Path],
                    n_files: int, n_completed: int, png_name: str | None) -> str:
    """The text of ``report.md``."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_dup = sum(p["status"] == DUPLICATE for p in problems)
    n_pending = sum(p["status"] in PENDING for p in problems)
    n_bad = len(problems) - n_dup - n_pending
    md = ["# transferlab report", "",
          f"Generated {now} from: " + ", ".join(f"`{d}`" for d in dirs), "",
          f"{n_files} result file(s) found: {n_completed} completed run(s) averaged, {n_pending} interrupted or "
          f"running (pending: they resume when run again), {n_bad} failed/unreadable, {n_dup} duplicate(s) ignored.", ""]
    groups = combos(summary) if not summary.empty else []
    md += _results_section(groups) + _findings_section(summary, groups) + _problems_section(problems)
    if png_name:
        md += ["## Learning curve", "", f"![learning curve]({png_name})", ""]
    return "\n".join(md)
