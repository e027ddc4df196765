"""Plain-language findings from a summary, each resting on Welch's t-test over seeds: best strategy per
size, scratch catch-up, negative transfer."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from transferlab.record import DataSize
from transferlab.report.stats import ALPHA, fmt_ms, fmt_p, p_less
from transferlab.report.summary import SCRATCH, combos

CLAIM_RULE = (
    f"Every claim rests on Welch's t-test (unequal variances, `scipy.stats.ttest_ind(..., equal_var=False)`) "
    f"over seeds on the test accuracies of the configurations selected on validation, one-sided, at "
    f"α = {ALPHA}: a strategy is *better* than another when p < α for its mean being higher; a transfer "
    f"strategy (anything but `{SCRATCH}`) is *negative transfer* at a size when p < α for its mean being "
    f"below `{SCRATCH}`'s; `{SCRATCH}` *catches up* at the smallest size from which it is not significantly "
    "worse than the best transfer strategy (a higher mean, or p ≥ α), there and at every larger size. "
    "A test needs n ≥ 2 runs on both sides; with fewer it is not made (`p n/a`)."
)
POWER_NOTE = (
    "With 3 seeds the test has little power: a difference of a few points can fail to reach p < α, so "
    "*not significant* does not mean *equal*."
)


@dataclass(frozen=True)
class _Comparison:
    """Scratch against the best transfer strategy at one size."""

    size: float
    caught: bool  # scratch's mean is higher, or it is not significantly below the best transfer strategy's
    scratch: pd.Series
    best: pd.Series  # the best transfer strategy's summary row
    p: float | None  # one-sided Welch p that scratch is below it


def _describe(kind: str, size: float) -> str:
    return DataSize(kind, float(size)).describe()


def _at(sk: pd.DataFrame, size: float) -> pd.DataFrame:
    return sk[sk["size"] == size]


def versus(best: pd.Series, others: pd.DataFrame) -> str:
    """Which of ``others`` ``best`` is significantly better than, which not, which are untested."""
    better, not_better, untested = [], [], []
    for _, o in others.iterrows():
        p = p_less(o, best)
        if p is None:
            untested.append(str(o["strategy"]))
        else:
            (better if p < ALPHA else not_better).append(f"{o['strategy']} ({fmt_p(p)})")
    parts = ([f"significantly better than {', '.join(better)}"] if better else []) + (
        [f"not significantly better than {', '.join(not_better)}"] if not_better else []) + (
        [f"untested against {', '.join(untested)} (n < 2)"] if untested else [])
    return "; ".join(parts)


def best_per_size(kind: str, sk: pd.DataFrame) -> list[str]:
    """One line per size: the strategy with the highest mean test accuracy there, and the tests against the rest."""
    out = []
    for s in sorted(sk["size"].unique()):
        at = _at(sk, s)
        best = at.loc[at["acc_mean"].idxmax()]
        others = at.drop(index=best.name)
        tests = versus(best, others) if len(others) else "the only strategy run at this size"
        out.append(f"At {_describe(kind, s)}, the best strategy is {best['strategy']} "
                   f"(test acc {fmt_ms(best['acc_mean'], best['acc_std'])}, n={best['n_runs']}): {tests}.")
    return out


def _comparisons(sk: pd.DataFrame) -> list[_Comparison]:
    """Scratch vs the best transfer strategy, at each size (ascending) where both were run."""
    out = []
    for s in sorted(sk["size"].unique()):
        at = _at(sk, s)
        scr = at[at["strategy"] == SCRATCH]
        tr = at[at["strategy"] != SCRATCH]
        if len(scr) and len(tr):
            b, sc = tr.loc[tr["acc_mean"].idxmax()], scr.iloc[0]
            p = p_less(sc, b)
            out.append(_Comparison(s, sc["acc_mean"] >= b["acc_mean"] or (p is not None and p >= ALPHA), sc, b, p))
    return out


def _vs(c: _Comparison) -> str:
    return (f"scratch {fmt_ms(c.scratch['acc_mean'], c.scratch['acc_std'])} vs {c.best['strategy']} "
            f"{fmt_ms(c.best['acc_mean'], c.best['acc_std'])}, {fmt_p(c.p)}")


def scratch_catch_up(kind: str, sk: pd.DataFrame) -> str:
    """The size from which scratch is not significantly worse than the best transfer strategy (or that it never is)."""
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
        return (f"Scratch never catches up with the best transfer strategy within the sizes tested: at the "
                f"largest, {_describe(kind, c.size)}, it is significantly worse ({_vs(c)}).")
    c = comparable[start]
    where = "already at the smallest size compared" if start == 0 else "from this size on"
    return (f"Scratch catches up at {_describe(kind, c.size)} ({where}): not significantly worse than the best "
            f"transfer strategy there ({_vs(c)}) and at every larger size tested.")


def negative_transfer(kind: str, sk: pd.DataFrame) -> str:
    """Transfer strategies significantly worse than scratch (one-sided Welch, :data:`CLAIM_RULE`)."""
    flagged, checked = [], 0
    for s in sorted(sk["size"].unique()):
        at = _at(sk, s)
        scr = at[(at["strategy"] == SCRATCH) & (at["n_runs"] >= 2)]
        if scr.empty:
            continue
        sc = scr.iloc[0]
        for _, tr in at[(at["strategy"] != SCRATCH) & (at["n_runs"] >= 2)].iterrows():
            checked += 1
            p = p_less(tr, sc)
            if p is not None and p < ALPHA:
                flagged.append(f"{tr['strategy']} at {_describe(kind, s)} "
                               f"({fmt_ms(tr['acc_mean'], tr['acc_std'])} vs scratch "
                               f"{fmt_ms(sc['acc_mean'], sc['acc_std'])}, {fmt_p(p)})")
    if flagged:
        return (f"Negative transfer (significantly worse than scratch, Welch one-sided p < {ALPHA}): "
                + "; ".join(flagged) + ".")
    if checked:
        return (f"No negative transfer: none of the {checked} transfer strategy/size pair(s) with n >= 2 is "
                f"significantly worse than scratch (Welch one-sided, α = {ALPHA}).")
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
    never does); negative transfer; each under :data:`CLAIM_RULE`. With more
    than one combination each line is prefixed with ``[combination]``.
    """
    if summary.empty:
        return ["No completed runs, so no findings."]
    groups = combos(summary)
    if len(groups) == 1:
        return combo_findings(groups[0][1])
    return [f"[{label}] {line}" for label, sub in groups for line in combo_findings(sub)]
