"""Accuracy with one hyperparameter held fixed: the learning-rate sensitivity and the freeze depth.

At each value of the held hyperparameter (``lr``: ``optimizer.lr``; ``depth``: ``strategy.unfreeze_top_k``,
inf for null = every block), each seed's configuration is selected on validation over the other
hyperparameters like any grid point; validation and test accuracy are then averaged over seeds.
"""

from __future__ import annotations

import math

import pandas as pd

from transferlab.record import DataSize, Status
from transferlab.report.selection import Selection, numeric_mean, select
from transferlab.report.stats import fmt_ms
from transferlab.report.summary import COMBO_KEYS, summarize

LR_COLUMN, DEPTH_COLUMN = "lr", "depth"


def _std(s: pd.Series) -> float:
    values = pd.to_numeric(s, errors="coerce").dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def _count(s: pd.Series) -> int:
    return int(s.astype(bool).sum())


def held_fixed(sel: Selection, column: str) -> pd.DataFrame:
    """Per combination × strategy × size × value of ``column``: test and validation accuracy of the runs
    selected at that value (mean ± std over seeds, ``val_mean``/``val_std``) and ``n_chosen``, the number
    of seeds whose overall selection has this value. Empty when no completed run knows ``column``."""
    extra = {"val_mean": ("score", numeric_mean), "val_std": ("score", _std), "n_chosen": ("chosen", _count)}
    df = sel.frame
    done = df[df["counted"].astype(bool) & df[column].notna()] if not df.empty else df
    if done.empty:
        return summarize(done, by=[column], extra=extra)
    per_value = select(done.assign(chosen=done["selected"]), within=(column,))
    view = summarize(per_value[per_value["selected"]], by=[column], extra=extra)
    order = [*COMBO_KEYS, "size_kind", "size", "strategy", column]
    return with_pruned(view, df, column).sort_values(order, kind="stable").reset_index(drop=True)


def with_pruned(view: pd.DataFrame, frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """``view`` with ``n_pruned``: per value, the runs a rung or a pruner stopped there (successive halving);
    a value every run of which was pruned gets a row of its own (no accuracy, ``n_runs`` 0)."""
    keys = [*COMBO_KEYS, "strategy", "size_kind", "size", column]
    pruned = frame[(frame["status"] == Status.PRUNED.value) & frame[column].notna()] if "status" in frame else frame.iloc[:0]
    if pruned.empty:
        return view.assign(n_pruned=0)
    counts = pruned.groupby(keys, dropna=False).size().rename("n_pruned").reset_index()
    merged = view.merge(counts, on=keys, how="outer")
    merged["n_pruned"] = merged["n_pruned"].fillna(0).astype(int)
    for name in ("n_runs", "n_chosen"):
        merged[name] = merged[name].fillna(0).astype(int)
    return merged


def lr_free(sel: Selection) -> list[str]:
    """The strategies whose completed runs took no optimizer step (the solved linear probe): they used no LR,
    so the LR view leaves them out rather than draw them at an ``optimizer.lr`` they never used."""
    df = sel.frame
    if df.empty:
        return []
    done = df[df["counted"].astype(bool)]
    unused = done.groupby("strategy")["lr_unused"].all()
    return sorted(str(s) for s in unused[unused].index)


def varies(view: pd.DataFrame, column: str) -> bool:
    """Whether some combination × strategy × size has more than one value of ``column``."""
    if view.empty:
        return False
    return bool((view.groupby([*COMBO_KEYS, "strategy", "size_kind", "size"])[column].nunique() > 1).any())


def grid_edges(view: pd.DataFrame, column: str) -> list[str]:
    """Where most seeds selected the smallest or the largest value of ``column`` tried (of three or more): the
    strategy's best may lie beyond the grid, so it may be compared below its best. One line per such cell."""
    lines = []
    for key, g in view.groupby([*COMBO_KEYS, "strategy", "size_kind", "size"], sort=True):
        strategy, kind, size = key[-3:]
        if g[column].nunique() < 3:
            continue
        for edge, value in (("smallest", g[column].min()), ("largest", g[column].max())):
            at = g[g[column] == value].iloc[0]
            if 2 * int(at["n_chosen"]) > int(g["n_chosen"].sum()):
                lines.append(f"{strategy} at {DataSize(kind, float(size)).describe()}: {column}={value:g}, the grid's "
                             f"{edge}, was selected in {int(at['n_chosen'])} of {int(g['n_chosen'].sum())} seeds; its "
                             f"best may lie beyond the grid: extend it there.")
    return lines


def depth_strategies(view: pd.DataFrame) -> pd.DataFrame:
    """The rows of the (combination, strategy) pairs whose runs differ in the freeze depth."""
    if view.empty:
        return view
    n = view.groupby([*COMBO_KEYS, "strategy"])[DEPTH_COLUMN].transform("nunique")
    return view[n > 1]


def fmt_depth(depth: float) -> str:
    """``all`` (null: every block trains) or the number of top blocks."""
    return "all" if math.isinf(depth) else f"{depth:g}"


def _cell(r: pd.Series) -> str:
    pruned = int(r.get("n_pruned", 0) or 0)
    if int(r["n_runs"]) == 0:
        return f"pruned ({pruned})"
    test = fmt_ms(r["acc_mean"], r["acc_std"], digits=3)
    val = "n/a" if pd.isna(r["val_mean"]) else f"{r['val_mean']:.3f}"
    return f"{test} · val {val} · {int(r['n_chosen'])}/{int(r['n_runs'])}" + (f" · {pruned} pruned" if pruned else "")


#: what a held-fixed table's cell says, for the text above it
CELL_LEGEND = ("each cell: test accuracy mean ± std · validation mean · how many seeds' overall selection "
               "has this value (of the seeds run completed there); *pruned (k)*: k runs at this value were stopped "
               "at a rung of successive halving (or by Optuna's pruner), compared but never selected")


def view_rows(view: pd.DataFrame, column: str) -> tuple[list[str], list[list[str]]]:
    """A held-fixed table (see :func:`held_fixed`): a row per strategy × size, a column per value (:data:`CELL_LEGEND`)."""
    values = sorted(view[column].unique())
    name = {LR_COLUMN: "lr", DEPTH_COLUMN: "top blocks"}[column]
    header = ["strategy", "size"] + [f"{name}={fmt_depth(v) if column == DEPTH_COLUMN else f'{v:g}'}" for v in values]
    rows = []
    for (_, _, strategy), g in view.groupby(["size_kind", "size", "strategy"], sort=True):
        at = {r[column]: _cell(r) for _, r in g.iterrows()}
        rows.append([str(strategy), DataSize(g["size_kind"].iloc[0], float(g["size"].iloc[0])).describe()]
                    + [at.get(v, "—") for v in values])
    return header, rows
