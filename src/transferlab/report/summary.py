"""Completed runs averaged per combination × strategy × training-set size."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from transferlab.record import BASELINE_STRATEGY, TEST_ACC, TEST_F1
from transferlab.report.paired import PER_SEED, per_seed
from transferlab.report.stats import mean_ci

#: the keys that make one comparison (a table of its own in the report)
COMBO_KEYS: tuple[str, ...] = ("experiment", "dataset", "backbone", "weights", "head")
MISSING = "-"  # placeholder for an absent combination key

SUMMARY_COLUMNS: list[str] = [
    *COMBO_KEYS,
    "strategy",
    "size_kind",
    "size",
    "n_train",
    "acc_mean",
    "acc_std",
    "acc_ci_low",
    "acc_ci_high",
    "f1_mean",
    "f1_std",
    "n_runs",
    "trainable_params",
    "train_time_s",
    "l2_median",
    "l2_min",
    "l2_max",
    PER_SEED,
]

#: the L2 strength the L-BFGS probe chose (``result.json``'s ``probe.l2``, flattened)
PROBE_L2 = "probe.l2"

#: the record's columns that say which draw and source model a run had (``paired.per_seed`` reads them)
DRAW_COLUMNS = ("seed", "draw", "source_seed")

_MEANS = ((TEST_ACC, "acc"), (TEST_F1, "f1"), ("n_train", "n_train"),
          ("trainable_params", "trainable_params"), ("train_time_s", "train_time_s"))


def combo_label(row: pd.Series | dict) -> str:
    """``experiment: dataset=…, backbone=…, weights=…, head=…`` of a summary row."""
    exp, ds, bb, w, head = (row[k] for k in COMBO_KEYS)
    return f"{exp}: dataset={ds}, backbone={bb}, weights={w}, head={head}"


def combos(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per combination, sorted by the combination keys."""
    return [(combo_label(sub.iloc[0]), sub) for _, sub in summary.groupby(list(COMBO_KEYS), sort=True)]


def share_scratch_baseline(work: pd.DataFrame) -> pd.DataFrame:
    """Copy scratch rows into every ``weights`` value used by transfer runs of the same
    experiment/dataset/backbone/head: scratch is random init, so its own ``weights``
    entry (e.g. "none") must not split it off from the runs it is the baseline for."""
    is_scr = work["strategy"] == BASELINE_STRATEGY
    if not is_scr.any() or is_scr.all():
        return work
    base = [k for k in COMBO_KEYS if k != "weights"]
    transfer_weights = work[~is_scr].groupby(base, sort=False)["weights"].agg(lambda s: sorted(set(s)))
    parts = [work[~is_scr]]
    for _, r in work[is_scr].iterrows():
        key = tuple(r[k] for k in base)
        targets = transfer_weights.get(key, None)
        for w in (targets if targets else [r["weights"]]):
            parts.append(r.to_frame().T.assign(weights=w))
    out = pd.concat(parts, ignore_index=True)
    return out.astype({c: work[c].dtype for c in work.columns})


def combo_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The combination keys of each run as text (``-`` where absent), plus ``strategy``, ``size_kind`` and ``size``."""
    work = pd.DataFrame(index=df.index)
    for key in COMBO_KEYS:
        col = df[key] if key in df else pd.Series(None, index=df.index, dtype=object)
        work[key] = col.map(lambda v: MISSING if v is None or pd.isna(v) else str(v)).astype(object)
    work["strategy"] = df["strategy"].astype(str).astype(object)
    work["size_kind"] = df["size_kind"].astype(object)
    work["size"] = df["size"].astype(float)
    return work


def _work_frame(df: pd.DataFrame, passthrough: Sequence[str]) -> pd.DataFrame:
    """The columns summarize needs, one row per run: combination keys as text, sizes, numbers, and ``passthrough``."""
    work = combo_columns(df)
    for src, dst in (*_MEANS, (PROBE_L2, "l2")):
        work[dst] = pd.to_numeric(df[src], errors="coerce") if src in df else np.nan
    for col in (*passthrough, *DRAW_COLUMNS):
        work[col] = df[col] if col in df else np.nan
    return work


#: an extra summary column: (input column, how a group's values of it become one cell)
Extra = tuple[str, Callable[[pd.Series], Any]]


def summarize(df: pd.DataFrame, by: Sequence[str] = (), extra: Mapping[str, Extra] | None = None) -> pd.DataFrame:
    """Aggregate completed runs (as from :meth:`~transferlab.report.load.Scan.runs`) per
    combination × strategy × training-set size (× the ``by`` columns).

    Columns are :data:`SUMMARY_COLUMNS` (then ``by``, then ``extra``'s names); ``acc_*`` refer to
    ``test/acc`` (sample std, two-sided 95% Student-t interval, NaN when n = 1), ``f1_*`` to
    ``test/f1_macro``; n_train, trainable_params and train_time_s are means; ``l2_*`` the median, min
    and max over seeds of the L2 strength an L-BFGS probe chose (NaN for other runs); ``per_seed`` the runs
    themselves (``paired.SeedResult``: seed, draw, source seed, test accuracy), which the paired
    comparisons read; ``extra`` maps a
    column name to (input column, reducer of a group's values). Rows are sorted by combination, size,
    ``by``, strategy. Scratch runs are shared as the baseline across the ``weights`` values of the
    transfer runs they go with.
    """
    extra = dict(extra or {})
    columns = [*SUMMARY_COLUMNS, *by, *extra]
    if df.empty:
        return pd.DataFrame(columns=columns)
    work = share_scratch_baseline(_work_frame(df, [*by, *{src for src, _ in extra.values()}]))
    keys = [*COMBO_KEYS, "strategy", "size_kind", "size", *by]
    rows = []
    for key_vals, g in work.groupby(keys, sort=False, dropna=False):
        acc_mean, acc_std, lo, hi = mean_ci(g["acc"])
        f1_mean, f1_std, _, _ = mean_ci(g["f1"])
        rows.append({
            **dict(zip(keys, key_vals)),
            "n_train": g["n_train"].mean(),
            "acc_mean": acc_mean, "acc_std": acc_std, "acc_ci_low": lo, "acc_ci_high": hi,
            "f1_mean": f1_mean, "f1_std": f1_std,
            "n_runs": int(len(g)),
            "trainable_params": g["trainable_params"].mean(),
            "train_time_s": g["train_time_s"].mean(),
            "l2_median": g["l2"].median(), "l2_min": g["l2"].min(), "l2_max": g["l2"].max(),
            PER_SEED: per_seed(g),
            **{name: reduce(g[src]) for name, (src, reduce) in extra.items()},
        })
    out = pd.DataFrame(rows, columns=columns)
    out = out.sort_values([*COMBO_KEYS, "size_kind", "size", *by, "strategy"], kind="stable")
    return out.reset_index(drop=True)
