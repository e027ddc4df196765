"""Plain-language findings from a summary: best strategy per size, scratch catch-up, negative transfer."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from transferlab.record import DataSize
from transferlab.report.stats import fmt_ms
from transferlab.report.summary import SCRATCH, combos

NEGATIVE_TRANSFER_RULE = (
    f"a transfer strategy (anything but `{SCRATCH}`) is flagged as negative transfer at a size "
    f"only when both it and `{SCRATCH}` have n >= 2 runs there and "
    f"transfer mean + transfer std < {SCRATCH} mean - {SCRATCH} std "
    "(test accuracy, sample std over seeds); overlapping mean ± std ranges are not flagged"
)
CATCH_UP_RULE = (
    "Scratch *catches up* at the smallest size from which its mean test accuracy is at least the best "
    "transfer strategy's mean minus its std, at that size and every larger one."
)


@dataclass(frozen=True)
class _Comparison:
    """Scratch against the best transfer strategy at one size."""

    size: float
    caught: bool  # scratch mean >= best transfer mean - its std
    scratch_mean: float
    best: pd.Series  # the best transfer strategy's summary row


def _describe(kind: str, size: float) -> str:
    return DataSize(kind, float(size)).describe()


def _at(sk: pd.DataFrame, size: float) -> pd.DataFrame:
    return sk[sk["size"] == size]


def best_per_size(kind: str, sk: pd.DataFrame) -> list[str]:
    """One line per size: the strategy with the highest mean test accuracy there."""
    out = []
    for s in sorted(sk["size"].unique()):
        at = _at(sk, s)
        best = at.loc[at["acc_mean"].idxmax()]
        others = len(at) - 1
        out.append(f"At {_describe(kind, s)}, the best strategy is {best['strategy']} "
                   f"(test acc {fmt_ms(best['acc_mean'], best['acc_std'])}, n={best['n_runs']}"
                   f"{'' if others else '; the only strategy run at this size'}).")
    return out


def _comparisons(sk: pd.DataFrame) -> list[_Comparison]:
    """Scratch vs the best transfer strategy, at each size (ascending) where both were run."""
    out = []
    for s in sorted(sk["size"].unique()):
        at = _at(sk, s)
        scr = at[at["strategy"] == SCRATCH]
        tr = at[at["strategy"] != SCRATCH]
        if len(scr) and len(tr):
            b = tr.loc[tr["acc_mean"].idxmax()]
            sm = float(scr["acc_mean"].iloc[0])
            std = 0.0 if pd.isna(b["acc_std"]) else float(b["acc_std"])
            out.append(_Comparison(s, sm >= b["acc_mean"] - std, sm, b))
    return out


def scratch_catch_up(kind: str, sk: pd.DataFrame) -> str:
    """The size from which scratch stays within the spread of the best transfer strategy (or that it never does)."""
    comparable = _comparisons(sk)
    if not comparable:
        has_scr = (sk["strategy"] == SCRATCH).any()
        return ("Scratch catch-up not assessed: "
                + ("no transfer strategy was run at the sizes scratch was run." if has_scr else f"no `{SCRATCH}` runs."))
    start = None
    for i in range(len(comparable) - 1, -1, -1):
        if not comparable[i].caught:
            break
        start = i
    if start is None:
        c = comparable[-1]
        return (f"Scratch never catches up with the best transfer strategy within the sizes tested "
                f"(at the largest, {_describe(kind, c.size)}: scratch {c.scratch_mean:.4f} vs "
                f"{c.best['strategy']} {fmt_ms(c.best['acc_mean'], c.best['acc_std'])}).")
    c = comparable[start]
    where = "already at the smallest size compared" if start == 0 else "from this size on"
    return (f"Scratch catches up at {_describe(kind, c.size)} ({where}): scratch mean "
            f"{c.scratch_mean:.4f} is within the spread of, or above, the best transfer strategy "
            f"{c.best['strategy']} ({fmt_ms(c.best['acc_mean'], c.best['acc_std'])}) there and at "
            f"every larger size tested.")


def negative_transfer(kind: str, sk: pd.DataFrame) -> str:
    """Transfer strategies worse than scratch beyond the spread, under :data:`NEGATIVE_TRANSFER_RULE`."""
    flagged, checked = [], 0
    for s in sorted(sk["size"].unique()):
        at = _at(sk, s)
        scr = at[(at["strategy"] == SCRATCH) & (at["n_runs"] >= 2)]
        if scr.empty:
            continue
        sc = scr.iloc[0]
        for _, tr in at[(at["strategy"] != SCRATCH) & (at["n_runs"] >= 2)].iterrows():
            checked += 1
            if tr["acc_mean"] + tr["acc_std"] < sc["acc_mean"] - sc["acc_std"]:
                flagged.append(f"{tr['strategy']} at {_describe(kind, s)} "
                               f"({fmt_ms(tr['acc_mean'], tr['acc_std'])} vs scratch "
                               f"{fmt_ms(sc['acc_mean'], sc['acc_std'])})")
    if flagged:
        return "Negative transfer (worse than scratch beyond the spread): " + "; ".join(flagged) + "."
    if checked:
        return (f"No negative transfer: none of the {checked} transfer strategy/size pair(s) "
                f"with n >= 2 is worse than scratch beyond the spread.")
    return (f"Negative transfer not assessed: needs >= 2 runs of both `{SCRATCH}` and a "
            "transfer strategy at the same size.")


def combo_findings(summary: pd.DataFrame) -> list[str]:
    """Findings for one combination, per size kind (fraction, per class) in turn."""
    out: list[str] = []
    for kind, sk in summary.groupby("size_kind", sort=True):
        out += best_per_size(kind, sk)
        out.append(scratch_catch_up(kind, sk))
        out.append(negative_transfer(kind, sk))
    return out


def findings(summary: pd.DataFrame) -> list[str]:
    """Plain-language findings from :func:`~transferlab.report.summary.summarize` output.

    Per size: best strategy; the size from which scratch catches up (or that it
    never does); negative transfer under :data:`NEGATIVE_TRANSFER_RULE`. With more
    than one combination each line is prefixed with ``[combination]``.
    """
    if summary.empty:
        return ["No completed runs, so no findings."]
    groups = combos(summary)
    if len(groups) == 1:
        return combo_findings(groups[0][1])
    return [f"[{label}] {line}" for label, sub in groups for line in combo_findings(sub)]
