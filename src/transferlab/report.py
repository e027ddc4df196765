"""Aggregate per-run ``result.json`` files into a report.

Usage::

    transferlab-report DIR... [--out OUT] [--wandb-project P] [--wandb-group G]

Finds every ``result.json`` below the given folders, averages completed runs
over seeds per (strategy, training-set size), and writes ``results.csv``,
``report.md`` and ``learning_curve.png`` into OUT (default: ``DIR/report`` for
the first DIR).  Failed, interrupted or unreadable runs are listed, never
averaged in.  Duplicate records of one ``config_hash`` count once (newest by
file mtime wins).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

RESULT_FILENAME = "result.json"
COMBO_KEYS: tuple[str, ...] = ("experiment", "dataset", "backbone", "weights", "head")
ACC = "test/acc"
F1 = "test/f1_macro"
SCRATCH = "scratch"
MISSING = "-"  # placeholder for an absent combination key
NEGATIVE_TRANSFER_RULE = (
    "a transfer strategy (anything but `scratch`) is flagged as negative transfer at a size "
    "only when both it and `scratch` have n >= 2 runs there and "
    "transfer mean + transfer std < scratch mean - scratch std "
    "(test accuracy, sample std over seeds); overlapping mean ± std ranges are not flagged"
)

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
]


class NoResultsError(FileNotFoundError):
    """Raised when no ``result.json`` exists below the given folders."""


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put its outputs (``png`` is None without completed runs)."""

    out: Path
    csv: Path
    md: Path
    png: Path | None


# --------------------------------------------------------------------------- statistics


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the regularized incomplete beta (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


@lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """Quantile (inverse CDF) of Student's t, by bisection on :func:`t_cdf`."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Return (mean, sample std, ci_low, ci_high); std/CI are NaN for n < 2."""
    arr = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)
    n = arr.size
    if n == 0:
        return (math.nan,) * 4
    mean = float(arr.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(arr.std(ddof=1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


# --------------------------------------------------------------------------- loading


def _find_result_files(dirs: Iterable[Path]) -> list[Path]:
    files: set[Path] = set()
    for d in dirs:
        d = Path(d)
        if d.is_file():
            files.add(d)
        elif d.is_dir():
            files.update(p for p in d.rglob(RESULT_FILENAME) if p.is_file())
        else:
            raise FileNotFoundError(f"no such file or folder: {d}")
    return sorted(files)


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    """Flatten one record: metrics keep their own names, other dicts get ``key.sub``."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if key == "metrics" and isinstance(value, dict):
            flat.update(value)
        elif isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v if not isinstance(v, (dict, list)) else json.dumps(v)
        elif isinstance(value, list):
            flat[key] = json.dumps(value)
        else:
            flat[key] = value
    return flat


def _first_line(text: Any) -> str:
    s = "" if text is None else str(text)
    lines = s.strip().splitlines()
    return lines[0] if lines else ""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _scan(dirs: Iterable[Path]) -> list[dict[str, Any]]:
    """Read every result file; one entry per file with ``_path``, ``_mtime``, ``_kind``.

    ``_kind`` is ``completed`` (usable), ``problem`` or ``duplicate``; problem and
    duplicate entries carry ``_note`` (what is wrong).
    """
    entries: list[dict[str, Any]] = []
    for path in _find_result_files(dirs):
        mtime = path.stat().st_mtime
        base = {"_path": str(path), "_mtime": mtime}
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            entries.append({**base, "status": "unparseable", "_kind": "problem",
                            "_note": f"{type(exc).__name__}: {_first_line(exc)}"})
            continue
        if not isinstance(record, dict):
            entries.append({**base, "status": "unparseable", "_kind": "problem",
                            "_note": f"expected a JSON object, got {type(record).__name__}"})
            continue
        flat = _flatten(record)
        status = str(record.get("status", "unknown"))
        entry = {**flat, **base, "status": status}
        if status != "completed":
            note = _first_line(record.get("error")) or (
                "run did not finish (interrupted or still running)" if status == "running"
                else f"status is '{status}'")
            entries.append({**entry, "_kind": "problem", "_note": note})
        elif not _is_number(flat.get(ACC)) or not record.get("strategy"):
            entries.append({**entry, "_kind": "problem",
                            "_note": f"completed but missing 'strategy' or numeric metrics['{ACC}']"})
        else:
            entries.append({**entry, "_kind": "completed"})

    # Duplicates: same config_hash within the same class (completed / problem) -> newest wins.
    for kind in ("completed", "problem"):
        by_hash: dict[str, list[dict[str, Any]]] = {}
        for e in entries:
            h = e.get("config_hash")
            if e["_kind"] == kind and h:
                by_hash.setdefault(str(h), []).append(e)
        for h, group in by_hash.items():
            if len(group) < 2:
                continue
            group.sort(key=lambda e: (e["_mtime"], e["_path"]))
            kept = group[-1]
            for e in group[:-1]:
                e["_kind"] = "duplicate"
                short = h if len(h) <= 16 else h[:12] + "…"
                e["_note"] = (f"same config_hash {short} as {kept['_path']} "
                              f"(kept the newest by mtime; counted once)")
    return entries


def load_results(dirs: list[Path]) -> tuple[pd.DataFrame, list[dict]]:
    """Completed runs (one row each, flattened, deduplicated) and a list of problems.

    Each problem is ``{"path", "status", "error"}``; ``status`` is the record's
    status, ``unparseable`` or ``duplicate``.
    """
    entries = _scan(dirs)
    rows = [{k: v for k, v in e.items() if not k.startswith("_")} | {"path": e["_path"],
            "mtime": e["_mtime"]} for e in entries if e["_kind"] == "completed"]
    problems = [{"path": e["_path"], "status": "duplicate" if e["_kind"] == "duplicate"
                 else e["status"], "error": e["_note"]}
                for e in entries if e["_kind"] != "completed"]
    df = pd.DataFrame(rows)
    return df, problems


# --------------------------------------------------------------------------- summary


def _size_columns(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(size_kind, size): fraction if set, else per_class; neither set means fraction 1.0."""
    frac = pd.to_numeric(df["fraction"], errors="coerce") if "fraction" in df else pd.Series(
        np.nan, index=df.index)
    per = pd.to_numeric(df["per_class"], errors="coerce") if "per_class" in df else pd.Series(
        np.nan, index=df.index)
    kind = pd.Series(np.where(frac.notna() | per.isna(), "fraction", "per_class"),
                     index=df.index, dtype=object)
    size = frac.where(frac.notna(), per).fillna(1.0).astype(float)
    return kind, size


def _share_scratch_baseline(work: pd.DataFrame) -> pd.DataFrame:
    """Copy scratch rows into every ``weights`` value used by transfer runs of the same
    experiment/dataset/backbone/head: scratch is random init, so its own ``weights``
    entry (e.g. "none") must not split it off from the runs it is the baseline for."""
    is_scr = work["strategy"] == SCRATCH
    if not is_scr.any() or is_scr.all():
        return work
    base = [k for k in COMBO_KEYS if k != "weights"]
    transfer_weights = work[~is_scr].groupby(base, sort=False)["weights"].agg(
        lambda s: sorted(set(s)))
    parts = [work[~is_scr]]
    for _, r in work[is_scr].iterrows():
        key = tuple(r[k] for k in base)
        targets = transfer_weights.get(key, None)
        for w in (targets if targets else [r["weights"]]):
            parts.append(r.to_frame().T.assign(weights=w))
    out = pd.concat(parts, ignore_index=True)
    return out.astype({c: work[c].dtype for c in work.columns})


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Aggregate completed runs per combination × strategy × training-set size.

    Columns are :data:`SUMMARY_COLUMNS`; ``acc_*`` refer to ``test/acc`` (sample
    std, two-sided 95% Student-t interval, NaN when n = 1), ``f1_*`` to
    ``test/f1_macro``; n_train, trainable_params and train_time_s are means.
    Rows are sorted by combination, size, strategy. Scratch runs are shared as the
    baseline across the ``weights`` values of the transfer runs they go with.
    """
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    work = pd.DataFrame(index=df.index)
    for key in COMBO_KEYS:
        col = df[key] if key in df else pd.Series(None, index=df.index, dtype=object)
        work[key] = col.map(lambda v: MISSING if v is None or pd.isna(v) else str(v)).astype(object)
    work["strategy"] = df["strategy"].astype(str).astype(object)
    work["size_kind"], work["size"] = _size_columns(df)
    for src, dst in ((ACC, "acc"), (F1, "f1"), ("n_train", "n_train"),
                     ("trainable_params", "trainable_params"), ("train_time_s", "train_time_s")):
        work[dst] = pd.to_numeric(df[src], errors="coerce") if src in df else np.nan
    work = _share_scratch_baseline(work)

    keys = [*COMBO_KEYS, "strategy", "size_kind", "size"]
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
        })
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    out = out.sort_values([*COMBO_KEYS, "size_kind", "size", "strategy"], kind="stable")
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------- findings


def _combo_label(row: pd.Series | dict) -> str:
    exp, ds, bb, w, head = (row[k] for k in COMBO_KEYS)
    return f"{exp}: dataset={ds}, backbone={bb}, weights={w}, head={head}"


def _size_label(kind: str, size: float) -> str:
    if kind == "per_class":
        return f"{size:g} per class"
    return f"fraction {size:g}"


def _std0(v: float) -> float:
    return 0.0 if pd.isna(v) else float(v)


def _fmt_ms(mean: float, std: float, digits: int = 4) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {'n/a' if pd.isna(std) else f'{std:.{digits}f}'}"


def _combo_findings(summary: pd.DataFrame) -> list[str]:
    """Findings for one combination (any number of size kinds)."""
    out: list[str] = []
    for kind, sk in summary.groupby("size_kind", sort=True):
        sizes = sorted(sk["size"].unique())
        # 1) best strategy per size
        for s in sizes:
            at = sk[sk["size"] == s]
            best = at.loc[at["acc_mean"].idxmax()]
            others = len(at) - 1
            out.append(f"At {_size_label(kind, s)}, the best strategy is {best['strategy']} "
                       f"(test acc {_fmt_ms(best['acc_mean'], best['acc_std'])}, n={best['n_runs']}"
                       f"{'' if others else '; the only strategy run at this size'}).")
        # 2) scratch catch-up
        comparable = []
        for s in sizes:
            at = sk[sk["size"] == s]
            scr = at[at["strategy"] == SCRATCH]
            tr = at[at["strategy"] != SCRATCH]
            if len(scr) and len(tr):
                b = tr.loc[tr["acc_mean"].idxmax()]
                sm = float(scr["acc_mean"].iloc[0])
                caught = sm >= b["acc_mean"] - _std0(b["acc_std"])
                comparable.append((s, caught, sm, b))
        if not comparable:
            has_scr = (sk["strategy"] == SCRATCH).any()
            out.append("Scratch catch-up not assessed: "
                       + ("no transfer strategy was run at the sizes scratch was run."
                          if has_scr else "no `scratch` runs."))
        else:
            start = None
            for i in range(len(comparable) - 1, -1, -1):
                if comparable[i][1]:
                    start = i
                else:
                    break
            if start is None:
                s, _, sm, b = comparable[-1]
                out.append(f"Scratch never catches up with the best transfer strategy within the "
                           f"sizes tested (at the largest, {_size_label(kind, s)}: scratch "
                           f"{sm:.4f} vs {b['strategy']} "
                           f"{_fmt_ms(b['acc_mean'], b['acc_std'])}).")
            else:
                s, _, sm, b = comparable[start]
                where = ("already at the smallest size compared" if start == 0
                         else "from this size on")
                out.append(f"Scratch catches up at {_size_label(kind, s)} ({where}): scratch mean "
                           f"{sm:.4f} is within the spread of, or above, the best transfer strategy "
                           f"{b['strategy']} ({_fmt_ms(b['acc_mean'], b['acc_std'])}) there and at "
                           f"every larger size tested.")
        # 3) negative transfer
        flagged, checked = [], 0
        for s in sizes:
            at = sk[sk["size"] == s]
            scr = at[(at["strategy"] == SCRATCH) & (at["n_runs"] >= 2)]
            if scr.empty:
                continue
            sc = scr.iloc[0]
            for _, tr in at[(at["strategy"] != SCRATCH) & (at["n_runs"] >= 2)].iterrows():
                checked += 1
                if tr["acc_mean"] + tr["acc_std"] < sc["acc_mean"] - sc["acc_std"]:
                    flagged.append(f"{tr['strategy']} at {_size_label(kind, s)} "
                                   f"({_fmt_ms(tr['acc_mean'], tr['acc_std'])} vs scratch "
                                   f"{_fmt_ms(sc['acc_mean'], sc['acc_std'])})")
        if flagged:
            out.append("Negative transfer (worse than scratch beyond the spread): "
                       + "; ".join(flagged) + ".")
        elif checked:
            out.append(f"No negative transfer: none of the {checked} transfer strategy/size pair(s) "
                       f"with n >= 2 is worse than scratch beyond the spread.")
        else:
            out.append("Negative transfer not assessed: needs >= 2 runs of both `scratch` and a "
                       "transfer strategy at the same size.")
    return out


def findings(summary: pd.DataFrame) -> list[str]:
    """Plain-language findings from :func:`summarize` output.

    Per size: best strategy; the size from which scratch catches up (or that it
    never does); negative transfer under :data:`NEGATIVE_TRANSFER_RULE`. With more
    than one combination each line is prefixed with ``[combination]``.
    """
    if summary.empty:
        return ["No completed runs, so no findings."]
    combos = list(summary.groupby(list(COMBO_KEYS), sort=True))
    if len(combos) == 1:
        return _combo_findings(combos[0][1])
    lines: list[str] = []
    for _, sub in combos:
        label = _combo_label(sub.iloc[0])
        lines.extend(f"[{label}] {line}" for line in _combo_findings(sub))
    return lines


# --------------------------------------------------------------------------- rendering


def _fmt_size(kind: str, size: float, mixed: bool) -> str:
    v = f"{size:g}"
    return f"{kind}={v}" if mixed else v


def _table_rows(sub: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    kinds = set(sub["size_kind"])
    mixed = len(kinds) > 1
    size_header = "size" if mixed else ("per class" if kinds == {"per_class"} else "fraction")
    header = ["strategy", size_header, "n_train (mean)", "test acc (mean ± std)", "test acc 95% CI",
              "test macro-F1 (mean ± std)", "n runs", "trainable params", "train time (mean s)"]
    rows = []
    for _, r in sub.iterrows():
        ci = ("n/a" if pd.isna(r["acc_ci_low"])
              else f"[{r['acc_ci_low']:.4f}, {r['acc_ci_high']:.4f}]")
        rows.append([
            str(r["strategy"]),
            _fmt_size(r["size_kind"], r["size"], mixed),
            "n/a" if pd.isna(r["n_train"]) else f"{r['n_train']:.0f}",
            _fmt_ms(r["acc_mean"], r["acc_std"]),
            ci,
            _fmt_ms(r["f1_mean"], r["f1_std"]),
            str(int(r["n_runs"])),
            "n/a" if pd.isna(r["trainable_params"]) else f"{r['trainable_params']:,.0f}",
            "n/a" if pd.isna(r["train_time_s"]) else f"{r['train_time_s']:.1f}",
        ])
    return header, rows


def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _combos(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [(_combo_label(sub.iloc[0]), sub)
            for _, sub in summary.groupby(list(COMBO_KEYS), sort=True)]


def render_markdown(summary: pd.DataFrame, problems: list[dict], dirs: list[Path],
                    n_files: int, n_completed: int, png_name: str | None) -> str:
    """The text of ``report.md``."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_dup = sum(p["status"] == "duplicate" for p in problems)
    n_bad = len(problems) - n_dup
    md = ["# transferlab report", "",
          f"Generated {now} from: " + ", ".join(f"`{d}`" for d in dirs), "",
          f"{n_files} result file(s) found: {n_completed} completed run(s) averaged, "
          f"{n_bad} incomplete/failed/unreadable, {n_dup} duplicate(s) ignored.", "",
          "## Results", ""]
    combos = _combos(summary) if not summary.empty else []
    if not combos:
        md += ["No completed runs.", ""]
    for label, sub in combos:
        if len(combos) > 1:
            md += [f"### {label}", ""]
        else:
            md += [f"Combination: {label}.", ""]
        md += [_md_table(*_table_rows(sub)), ""]
    md += ["Std is the sample standard deviation over seeds; the 95% interval is the two-sided "
           "Student-t confidence interval for the mean (n/a with a single run). `scratch` runs "
           "(random init) appear as the baseline in every `weights` combination of the same "
           "experiment, dataset, backbone and head.", "",
           "## Findings", "",
           f"Rule for negative transfer: {NEGATIVE_TRANSFER_RULE}. Scratch *catches up* at the "
           "smallest size from which its mean test accuracy is at least the best transfer "
           "strategy's mean minus its std, at that size and every larger one.", ""]
    if len(combos) > 1:
        for label, sub in combos:
            md += [f"### {label}", ""] + [f"- {line}" for line in _combo_findings(sub)] + [""]
    else:
        md += [f"- {line}" for line in findings(summary)] + [""]
    md += ["## Incomplete or failed runs", ""]
    if problems:
        if n_dup:
            md += [f"{n_dup} duplicate record(s) share a `config_hash` with a newer record; "
                   "each configuration is counted once (the newest by file mtime).", ""]
        md += [_md_table(["path", "status", "error"],
                         [[f"`{p['path']}`", p["status"], _first_line(p["error"])]
                          for p in problems]), ""]
    else:
        md += ["None.", ""]
    if png_name:
        md += ["## Learning curve", "", f"![learning curve]({png_name})", ""]
    return "\n".join(md)


def plot_learning_curve(summary: pd.DataFrame, png_path: Path,
                        figsize: tuple[float, float] = (11.0, 4.5), dpi: int = 120) -> Path:
    """Two panels: test acc (mean ± std shaded) and train time vs n_train, log x."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    multi = summary.groupby(list(COMBO_KEYS)).ngroups > 1
    use_n = summary["n_train"].notna().any()
    xcol = "n_train" if use_n else "size"
    fig, (ax_acc, ax_time) = plt.subplots(1, 2, figsize=figsize, dpi=dpi)
    try:
        groups = summary.groupby([*COMBO_KEYS, "strategy"], sort=True)
        for key, g in groups:
            strategy = key[-1]
            label = strategy if not multi else f"{strategy} ({'/'.join(map(str, key[1:5]))})"
            g = g[g[xcol].notna() & (g[xcol] > 0)].sort_values(xcol)
            if g.empty:
                continue
            x = g[xcol].to_numpy(float)
            m = g["acc_mean"].to_numpy(float)
            s = np.nan_to_num(g["acc_std"].to_numpy(float))
            (line,) = ax_acc.plot(x, m, marker="o", label=label)
            ax_acc.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2)
            t = g["train_time_s"].to_numpy(float)
            if np.isfinite(t).any():
                ax_time.plot(x, t, marker="o", color=line.get_color(), label=label)
        xlabel = "training examples (n_train, log scale)" if use_n else "training-set size (log scale)"
        ticks = sorted(set(summary[xcol].dropna().astype(float)) - {0.0})
        for ax in (ax_acc, ax_time):
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            if 0 < len(ticks) <= 12:  # label the sizes actually run, not 3x10^2-style ticks
                ax.xaxis.set_major_locator(FixedLocator(ticks))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, which="both", alpha=0.3)
        ax_acc.set_ylabel("test accuracy")
        ax_acc.set_title("Test accuracy vs training-set size (mean ± std over seeds)")
        ax_time.set_ylabel("train time (s)")
        ax_time.set_title("Training time vs training-set size (mean)")
        for ax in (ax_acc, ax_time):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(title="strategy", fontsize="small")
        fig.tight_layout()
        png_path = Path(png_path)
        png_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png_path, dpi=dpi)  # no bbox_inches="tight": keep the exact pixel size
    finally:
        plt.close(fig)
    return png_path


def _results_frame(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """All runs found (every status), flattened, for results.csv."""
    rows = []
    for e in entries:
        row = {"path": e["_path"], "status": e.get("status"),
               "counted": e["_kind"] == "completed", "note": e.get("_note", "")}
        row.update({k: v for k, v in e.items() if not k.startswith("_") and k not in row})
        rows.append(row)
    return pd.DataFrame(rows).convert_dtypes()


def write_report(dirs: list[Path], out: Path) -> ReportPaths:
    """Scan ``dirs`` and write results.csv, report.md and learning_curve.png into ``out``.

    Raises :class:`NoResultsError` when no result.json is found. Without any
    completed run the figure is skipped (``png`` is None).
    """
    dirs = [Path(d) for d in dirs]
    out = Path(out)
    entries = _scan(dirs)
    if not entries:
        raise NoResultsError(
            f"no {RESULT_FILENAME} found under: {', '.join(str(d) for d in dirs)}")
    df, problems = load_results(dirs)
    summary = summarize(df)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "results.csv", out / "report.md"
    _results_frame(entries).to_csv(csv_path, index=False)
    png_path: Path | None = None
    if not summary.empty:
        png_path = plot_learning_curve(summary, out / "learning_curve.png")
    md_path.write_text(render_markdown(summary, problems, dirs, len(entries), len(df),
                                       png_path.name if png_path else None), encoding="utf-8")
    return ReportPaths(out=out, csv=csv_path, md=md_path, png=png_path)


# --------------------------------------------------------------------------- wandb


def log_report_to_wandb(summary: pd.DataFrame, png_path: Path | None, project: str,
                        group: str | None = None) -> bool:
    """Log the summary as a ``wandb.Table`` and the figure as ``wandb.Image``.

    Uses a run with ``job_type="report"``; respects WANDB_MODE/WANDB_DIR. Never
    raises: any wandb failure becomes a warning and False is returned.
    """
    run = None
    try:
        import wandb

        run = wandb.init(project=project, group=group, job_type="report",
                         config={"n_rows": int(len(summary))})
        table_df = summary.astype(object).where(summary.notna(), None)
        payload: dict[str, Any] = {"report/summary": wandb.Table(dataframe=table_df)}
        if png_path is not None and Path(png_path).exists():
            payload["report/learning_curve"] = wandb.Image(str(png_path))
        run.log(payload)
        run.finish()
        run = None
        return True
    except Exception as exc:  # noqa: BLE001 - reporting must not break on wandb trouble
        warnings.warn(f"could not log the report to wandb ({type(exc).__name__}: {exc}); "
                      "the local report files are unaffected", RuntimeWarning, stacklevel=2)
        return False
    finally:
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass


# --------------------------------------------------------------------------- CLI


def _print_summary(summary: pd.DataFrame) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a project dependency
        for label, sub in _combos(summary):
            print(f"\n{label}\n" + _md_table(*_table_rows(sub)))
        return
    console = Console()
    if not console.is_terminal:  # piped/captured: do not squeeze the table into 80 columns
        console = Console(width=200)
    for label, sub in _combos(summary):
        header, rows = _table_rows(sub)
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
        paths = write_report(args.dirs, out)
    except NoResultsError as exc:
        print(f"error: {exc}.\nNothing to report: point transferlab-report at the folder(s) where "
              f"your runs wrote their {RESULT_FILENAME} files (e.g. the Hydra `outputs/` or "
              f"`multirun/` folder), or run an experiment first.", file=sys.stderr)
        return 2
    df, problems = load_results(args.dirs)
    summary = summarize(df)
    if summary.empty:
        print(f"warning: none of the runs under {', '.join(map(str, args.dirs))} completed; "
              f"see the failures listed in {paths.md}.", file=sys.stderr)
    else:
        _print_summary(summary)
        for line in findings(summary):
            print(f"- {line}")
    if problems:
        print(f"{len(problems)} incomplete/failed/duplicate record(s); see {paths.md}")
    print(f"wrote {paths.csv}")
    print(f"wrote {paths.md}")
    if paths.png is not None:
        print(f"wrote {paths.png}")
    if args.wandb_project and not summary.empty:
        log_report_to_wandb(summary, paths.png, args.wandb_project, args.wandb_group)
    return 0 if not summary.empty else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
