"""Selection on validation: in each cell (combination, strategy, training-set size, seed) the configuration
(distinct ``hparams``) with the best validation metric is the one reported; the test split never selects.

A cell's candidates are its completed runs; ties (equal validation metric) go to the smaller
``optimizer.lr``, then the smaller backbone LR (``optimizer.lr × strategy.backbone_lr_scale``), then the
configuration's text and the record's path (a stable order). A record without ``hparams`` (written before
the field) is a cell of its own, compared with nothing: old result sets are reported as before. A cell where every record failed is a failed cell; one with no
completed record but a running or interrupted one is pending.
"""

from __future__ import annotations

import difflib
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from transferlab.record import Status
from transferlab.report.load import Scan
from transferlab.report.summary import COMBO_KEYS, PROBE_L2, Extra, combo_columns

DEFAULT_METRIC = "val/acc_best"
LR, BACKBONE_LR_SCALE, DEPTH = "optimizer.lr", "strategy.backbone_lr_scale", "strategy.unfreeze_top_k"
#: a run's cell: the configurations inside one cell compete, one of them is selected. ``solo`` is the path of
#: a record without hparams (a cell of its own) and "" for the others
CELL: tuple[str, ...] = (*COMBO_KEYS, "strategy", "size_kind", "size", "seed", "solo")
#: values a run chose for itself (an inner loop: the L-BFGS probe's L2 strength), shown next to the
#: selected hyperparameters: (flattened result.json column, label)
INNER_CHOICES: tuple[tuple[str, str], ...] = ((PROBE_L2, "l2"),)

SELECTION_RULE = (
    "In each cell (combination, strategy, training-set size, seed) the configuration with the {best} "
    "validation metric `{metric}` is selected, and only its test metric is reported; the test split never "
    "selects. Ties go to the smaller `optimizer.lr`, then the smaller backbone LR "
    "(`optimizer.lr × strategy.backbone_lr_scale`), then a stable order (the configuration's text, the "
    "record's path). A run that did not log `{metric}` ranks below those that did. A record without "
    "`hparams` (written before the field existed) is one configuration compared with nothing."
)


class SelectionMetricError(ValueError):
    """The selection metric cannot select (no run logged it, or it is a test metric); the message says which exist."""


def check_metric(metric: str, logged: Sequence[str], explicit: bool, needed: bool) -> None:
    """Raise :class:`SelectionMetricError` for a test-split metric, or one no completed run logged when it was
    asked for (``explicit``) or some cell has several configurations to choose from (``needed``)."""
    val = [m for m in logged if not m.startswith("test/")]
    if metric.startswith("test/"):
        raise SelectionMetricError(
            f"--select-metric {metric} is a test metric: selecting on the test split makes the reported test "
            f"score optimistic. Select on a validation metric instead: {', '.join(val) or 'none was logged'}.")
    if metric in logged or not logged or not (explicit or needed):
        return
    close = difflib.get_close_matches(metric, logged, n=3)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise SelectionMetricError(
        f"selection metric {metric!r} was logged by no completed run.{hint} The runs logged: "
        f"{', '.join(logged)}. Pass one of the validation metrics with --select-metric.")


def higher_is_better(metric: str) -> bool:
    """The default direction of a selection metric: lower is better for a loss or an error, else higher."""
    name = metric.rsplit("/", 1)[-1].lower()
    return not ("loss" in name or "err" in name)


def _number(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def _hparam_columns(hp: dict[str, Any] | None, steps: int | None) -> dict[str, Any]:
    """The canonical text of a run's hparams and the numbers selection sorts by; ``lr_unused`` when the run took
    no optimizer step (``steps`` 0: the solved linear probe), whose ``lr`` is then NaN: it used none."""
    unused = steps == 0
    if hp is None:
        return {"config": "", "lr": math.nan, "backbone_lr": math.nan, "depth": math.nan, "lr_unused": unused}
    lr = math.nan if unused else _number(hp.get(LR))
    scale = _number(hp.get(BACKBONE_LR_SCALE, 1.0))  # the policy's default scale when the strategy has none
    depth = (math.inf if hp[DEPTH] is None else _number(hp[DEPTH])) if DEPTH in hp else math.nan
    return {"config": json.dumps(hp, sort_keys=True, default=str), "lr": lr, "backbone_lr": lr * scale,
            "depth": depth, "lr_unused": unused}


def tie_break(hp: dict[str, Any] | None, steps: int | None = None) -> tuple[float, float, str]:
    """What breaks a tie of equal validation scores, in order (:data:`SELECTION_RULE`): the smaller
    ``optimizer.lr``, the smaller backbone LR, the configuration's text; unknown LRs last. Successive halving
    (``hydra.sweeper.halving``) promotes by the same rule."""
    cols = _hparam_columns(hp, steps)
    lr, backbone = (math.inf if math.isnan(v) else v for v in (cols["lr"], cols["backbone_lr"]))
    return lr, backbone, cols["config"]


def candidates(found: Scan, metric: str, higher: bool = True) -> pd.DataFrame:
    """Every configuration tried (:meth:`Scan.attempts`), cell keys normalised, with ``config``, ``lr`` (NaN:
    unknown, or unused), ``backbone_lr``, ``depth`` (inf: all blocks; NaN: unknown), ``lr_unused`` (no optimizer
    step taken), ``score`` (the selection metric) and
    ``rank`` (the score, negated when lower is better)."""
    df = found.attempts()
    if df.empty:
        return df
    records = {e.path: e.record for e in found.entries}
    df = df.assign(**combo_columns(df))
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce") if "seed" in df else np.nan
    hp = pd.DataFrame([_hparam_columns(records[p].hparams, records[p].steps) for p in df["path"]], index=df.index)
    df = df.assign(**hp)
    df["solo"] = df["path"].where(df["config"] == "", "")
    df["score"] = pd.to_numeric(df[metric], errors="coerce") if metric in df else np.nan
    df["score"] = df["score"].where(df["counted"].astype(bool))
    df["rank"] = df["score"] if higher else -df["score"]
    return df


def _varying(configs: Sequence[str]) -> list[str]:
    """The hparams keys whose values differ between the given configurations (sorted)."""
    dicts = [json.loads(c) if c else {} for c in set(configs)]
    keys = sorted({k for d in dicts for k in d})
    return [k for k in keys if len({json.dumps(d.get(k, "<absent>")) for d in dicts}) > 1]


def _fmt_value(key: str, v: Any) -> str:
    if v is None:
        return "all" if key == DEPTH else "null"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _choice(row: pd.Series, keys: list[str]) -> str:
    """What the selected run chose: the varying hparams, then any :data:`INNER_CHOICES` it carries."""
    hp = json.loads(row["config"]) if row["config"] else {}
    parts = [f"{k.rsplit('.', 1)[-1]}={_fmt_value(k, hp.get(k))}" for k in keys]
    parts += [f"{label}={row[col]:g}" for col, label in INNER_CHOICES
              if col in row.index and not math.isnan(_number(row[col]))]
    return ", ".join(parts)


def select(df: pd.DataFrame, within: Sequence[str] = ()) -> pd.DataFrame:
    """``df`` (from :func:`candidates`) with ``selected`` (one completed run per cell × ``within``, by the
    rule in :data:`SELECTION_RULE`), ``n_configs`` (distinct configurations compared: completed or pruned),
    ``grid_time_s`` (train time of every configuration tried in the cell) and ``choice`` (selected rows)."""
    groups = [*CELL, *within]
    df = df.dropna(subset=list(within)).copy() if within else df.copy()
    done = df[df["counted"].astype(bool)]
    ranked = done.assign(neg=-done["rank"].round(9)).sort_values(
        ["neg", "lr", "backbone_lr", "config", "path"], na_position="last", kind="stable")
    winners = ranked.index[~ranked.duplicated(groups, keep="first")]
    df["selected"] = df.index.isin(winners)
    keyed = [df[k] for k in groups]
    compared = df["counted"].astype(bool) | (df["status"] == Status.PRUNED.value if "status" in df else False)
    df["n_configs"] = df["config"].where(compared).groupby(keyed, dropna=False).transform("nunique")
    times = pd.to_numeric(df["train_time_s"], errors="coerce") if "train_time_s" in df else pd.Series(np.nan, df.index)
    df["grid_time_s"] = times.groupby(keyed, dropna=False).transform(lambda s: s.sum(min_count=1))
    df["choice"] = ""
    for _, cell in done.groupby(groups, dropna=False, sort=False):
        keys = _varying(list(cell["config"]))
        for i in cell.index.intersection(winners):
            df.at[i, "choice"] = _choice(df.loc[i], keys)
    return df


def _cell_status(statuses: pd.Series) -> str:
    return "failed" if (statuses == Status.FAILED.value).all() else "pending"


def unselected_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Cells without a completed run: ``status`` failed (every configuration failed) or pending (some are
    running or interrupted), ``n_configs`` tried and the first ``error``."""
    columns = [*CELL, "status", "n_configs", "error"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, cell in df.groupby(list(CELL), dropna=False, sort=True):
        if cell["counted"].astype(bool).any():
            continue
        errors = cell["error"].dropna() if "error" in cell else pd.Series(dtype=object)
        rows.append({**dict(zip(CELL, key)), "status": _cell_status(cell["status"]),
                     "n_configs": int(len(cell)), "error": str(errors.iloc[0]) if len(errors) else ""})
    return pd.DataFrame(rows, columns=columns)


def numeric_mean(s: pd.Series) -> float:
    """The mean of the numbers in ``s`` (anything else ignored)."""
    return float(pd.to_numeric(s, errors="coerce").mean())


def _range(s: pd.Series) -> str:
    lo, hi = int(s.min()), int(s.max())
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def _counts(s: pd.Series) -> str:
    n = len(s)
    counts = Counter(s)
    if set(counts) == {""}:
        return "— (one configuration)"
    return "; ".join(f"{c or '—'} ({k}/{n})" for c, k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def summary_extras() -> dict[str, Extra]:
    """The summary columns selection adds: selected validation mean, configurations compared, the tuning
    grid's train time (mean over seeds) and the selected values (``lr=0.003 (3/3)``)."""
    return {"val_mean": ("score", numeric_mean), "configs": ("n_configs", _range),
            "grid_time_s": ("grid_time_s", numeric_mean), "selected_hparams": ("choice", _counts)}


@dataclass(frozen=True)
class Selection:
    """The selection over one scan: every configuration tried, flagged, and the cells without a result."""

    frame: pd.DataFrame  # :func:`select` output over :func:`candidates`
    unselected: pd.DataFrame  # :func:`unselected_cells`
    metric: str
    higher: bool = True  # whether a higher metric is better

    @property
    def rule(self) -> str:
        """:data:`SELECTION_RULE` for this metric and direction."""
        return SELECTION_RULE.format(metric=self.metric, best="highest" if self.higher else "lowest")

    @property
    def selected(self) -> pd.DataFrame:
        """The selected runs, one per cell (the rows the report averages)."""
        return self.frame[self.frame["selected"]] if not self.frame.empty else self.frame

    @property
    def selected_paths(self) -> set[str]:
        return set(self.selected["path"]) if not self.frame.empty else set()


def select_runs(found: Scan, metric: str = DEFAULT_METRIC, explicit: bool = False,
                higher: bool | None = None) -> Selection:
    """Select on ``metric`` (higher is better unless ``higher`` is False, or None and the name says loss or
    error) in every cell of ``found``; raises :class:`SelectionMetricError` (see :func:`check_metric`)."""
    higher = higher_is_better(metric) if higher is None else higher
    df = candidates(found, metric, higher)
    chosen = select(df) if not df.empty else df
    check_metric(metric, found.metric_names(), explicit,
                 needed=not chosen.empty and bool((chosen["n_configs"] > 1).any()))
    return Selection(chosen, unselected_cells(df), metric, higher)
