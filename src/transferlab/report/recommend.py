"""The answer per training-set size: the best strategy, or the cheapest of those not significantly worse.

Cost is the train time of the whole tuning grid (``train_time_s``, feature extraction included, summed
over every configuration tried in a cell, mean over seeds), then the trainable parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from transferlab.record import DataSize
from transferlab.report.findings import versus
from transferlab.report.paired import Comparison, compare, fmt_test
from transferlab.report.stats import ALPHA, fmt_ms
from transferlab.report.summary import combos

RECOMMEND_RULE = (
    "Per size the recommended strategy is the one with the best mean test accuracy (of the configurations "
    "selected on validation) unless others are not significantly worse than it (one-sided, p ≥ "
    f"{ALPHA}: a paired t-test over the draws they share, or Welch's t-test where the runs cannot be paired, "
    "see Findings); then it is the cheapest of those: the least train time for the whole tuning grid "
    "(feature extraction included, summed over every configuration tried, mean over seeds), then the fewest "
    "trainable parameters. A strategy that cannot be tested against the best (fewer than 2 paired draws, or "
    "for Welch's test 2 runs a side) does not qualify as not worse."
)


@dataclass(frozen=True)
class Answer:
    """The recommendation at one size of one combination."""

    combo: str
    size: DataSize
    chosen: pd.Series  # the recommended strategy's summary row
    best: pd.Series  # the best mean's summary row
    vs_best: Comparison | None  # the chosen one against the best (None: it is the best)
    n_equivalent: int  # strategies not significantly worse than the best, the best included
    at: pd.DataFrame  # every strategy's summary row at this size


def grid_time(row: pd.Series) -> float:
    """The tuning grid's train time of a summary row (the selected run's own when no grid was recorded)."""
    value = row.get("grid_time_s", math.nan)
    return float(row["train_time_s"] if pd.isna(value) else value)


def _cost(row: pd.Series) -> tuple[float, float, float, str]:
    time, params = grid_time(row), row["trainable_params"]
    return (math.inf if pd.isna(time) else time, math.inf if pd.isna(params) else float(params),
            -float(row["acc_mean"]), str(row["strategy"]))


def answer_at(combo: str, at: pd.DataFrame) -> Answer:
    """The recommendation among the strategies of one size (rows of a summary)."""
    best = at.loc[at["acc_mean"].idxmax()]
    ok: list[tuple[pd.Series, Comparison | None]] = [(best, None)]
    for i, r in at.iterrows():
        if i != best.name and (c := compare(r, best)).not_below:
            ok.append((r, c))
    chosen, c = min(ok, key=lambda pair: _cost(pair[0]))
    return Answer(combo, DataSize(str(best["size_kind"]), float(best["size"])), chosen, best, c, len(ok), at)


def answers(summary: pd.DataFrame) -> list[Answer]:
    """One :class:`Answer` per combination × size, in the summary's order."""
    out = []
    for label, sub in combos(summary):
        for _, at in sub.groupby(["size_kind", "size"], sort=True):
            out.append(answer_at(label, at))
    return out


def _why(a: Answer) -> str:
    if len(a.at) == 1:
        return "the only strategy run at this size"
    cheapest = f"; the cheapest of the {a.n_equivalent} within the spread" if a.n_equivalent > 1 else ""
    if a.vs_best is None:
        return f"best test mean: {versus(a.best, a.at.drop(index=a.best.name))}{cheapest}"
    return (f"not significantly worse than the best, {a.best['strategy']} "
            f"({fmt_ms(a.best['acc_mean'], a.best['acc_std'])}, {fmt_test(a.vs_best)}){cheapest}")


def answer_rows(found: list[Answer]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the answer table (the combination is a column when there are several)."""
    multi = len({a.combo for a in found}) > 1
    header = (["combination"] if multi else []) + [
        "size", "recommended", "test acc (mean ± std, n)", "why",
        "cost: tuning-grid train time (s, mean over seeds)", "trainable params"]
    rows = []
    for a in found:
        r, t = a.chosen, grid_time(a.chosen)
        rows.append(([a.combo] if multi else []) + [
            a.size.describe(), f"**{r['strategy']}**", f"{fmt_ms(r['acc_mean'], r['acc_std'])}, n={int(r['n_runs'])}",
            _why(a), "n/a" if pd.isna(t) else f"{t:.1f}",
            "n/a" if pd.isna(r["trainable_params"]) else f"{r['trainable_params']:,.0f}"])
    return header, rows
