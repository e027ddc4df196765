"""Plain-language findings from a summary, each resting on a one-sided test over seeds, paired on the draws
the strategies share (:mod:`~transferlab.report.paired`): best strategy per size, scratch catch-up, negative
transfer. Where a test cannot be made, no claim is made: the finding says *not tested*."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from transferlab.record import BASELINE_STRATEGY, DataSize
from transferlab.report.paired import Comparison, compare, fmt_test
from transferlab.report.stats import ALPHA, fmt_ms
from transferlab.report.summary import combos

CLAIM_RULE = (
    f"Every claim rests on a one-sided test at α = {ALPHA} on the test accuracies of the configurations "
    "selected on validation, one per strategy, size and seed. At one seed every strategy trains on the same "
    "draw of training examples, is selected on the same validation split and starts from the same source model, "
    "so two strategies are compared paired, seed by seed: a paired t-test on the per-draw differences "
    "(`scipy.stats.ttest_rel`). Runs that cannot be paired (a seed one side lacks, draws or source models that "
    "differ at a seed, records that do not name their draw) are compared by Welch's t-test instead "
    "(`scipy.stats.ttest_ind(..., equal_var=False)`), and the claim says so. A strategy is *better* than "
    f"another when p < α for its accuracy being higher; a transfer strategy (anything but `{BASELINE_STRATEGY}`) is "
    f"*negative transfer* at a size when p < α for its accuracy being below `{BASELINE_STRATEGY}`'s; `{BASELINE_STRATEGY}` *catches "
    "up* at the smallest size from which it is not significantly worse than the best transfer strategy "
    "(p ≥ α), there and at every larger size. A test needs 2 or more paired draws (Welch's: 2 or more runs a "
    "side, with some spread); where it cannot be made, no claim is made and the report says *not tested*."
)


def power_note(summary: pd.DataFrame) -> str:
    """What the number of seeds behind the tests allows, with the actual count (per strategy and size)."""
    counts = sorted({int(n) for n in summary["n_runs"]}) if not summary.empty else [0]
    if counts[-1] < 2:
        return f"With {counts[-1]} seed per strategy and size no test can be made, so no claim is made."
    seeds = f"{counts[0]} seeds" if len(counts) == 1 else f"{counts[0]} to {counts[-1]} seeds"
    return (f"With {seeds} per strategy and size, a real difference of a few points can fail to reach p < α: "
            "*not significant* does not mean *equal*.")


@dataclass(frozen=True)
class _VsScratch:
    """Scratch against the best transfer strategy at one size."""

    size: float
    scratch: pd.Series
    best: pd.Series  # the best transfer strategy's summary row
    test: Comparison  # scratch against it: p for scratch being below


def _describe(kind: str, size: float) -> str:
    return DataSize(kind, float(size)).describe()


def _at(sk: pd.DataFrame, size: float) -> pd.DataFrame:
    return sk[sk["size"] == size]


def versus(best: pd.Series, others: pd.DataFrame) -> str:
    """Which of ``others`` ``best`` is significantly better than, which not, against which no test was made."""
    better, not_better, untested = [], [], []
    for _, o in others.iterrows():
        c = compare(o, best)
        if not c.made:
            untested.append(f"{o['strategy']} ({c.note})")
        else:
            (better if c.below else not_better).append(f"{o['strategy']} ({fmt_test(c)})")
    parts = ([f"significantly better than {', '.join(better)}"] if better else []) + (
        [f"not significantly better than {', '.join(not_better)}"] if not_better else []) + (
        [f"not tested against {', '.join(untested)}"] if untested else [])
    return "; ".join(parts)


def best_per_size(kind: str, sk: pd.DataFrame) -> list[str]:
    """One line per size: the strategy with the highest mean test accuracy there, and the tests against the rest."""
    out = []
    for s in sorted(sk["size"].unique()):
        at = _at(sk, s)
        best = at.loc[at["acc_mean"].idxmax()]
        others = at.drop(index=best.name)
        tests = versus(best, others) if len(others) else "the only strategy run at this size"
        out.append(f"At {_describe(kind, s)}, the best mean is {best['strategy']}'s "
                   f"(test acc {fmt_ms(best['acc_mean'], best['acc_std'])}, n={best['n_runs']}): {tests}.")
    return out


def _comparisons(sk: pd.DataFrame) -> list[_VsScratch]:
    """Scratch vs the best transfer strategy, at each size (ascending) where both were run."""
    out = []
    for s in sorted(sk["size"].unique()):
        at = _at(sk, s)
        scr = at[at["strategy"] == BASELINE_STRATEGY]
        tr = at[at["strategy"] != BASELINE_STRATEGY]
        if len(scr) and len(tr):
            b, sc = tr.loc[tr["acc_mean"].idxmax()], scr.iloc[0]
            out.append(_VsScratch(s, sc, b, compare(sc, b)))
    return out


def _vs(c: _VsScratch) -> str:
    return (f"scratch {fmt_ms(c.scratch['acc_mean'], c.scratch['acc_std'])} vs {c.best['strategy']} "
            f"{fmt_ms(c.best['acc_mean'], c.best['acc_std'])}, {fmt_test(c.test)}")


def scratch_catch_up(kind: str, sk: pd.DataFrame) -> str:
    """The size from which scratch is not significantly worse than the best transfer strategy (or that it
    never is, or that the test cannot be made)."""
    comparable = _comparisons(sk)
    if not comparable:
        has_scr = (sk["strategy"] == BASELINE_STRATEGY).any()
        return ("Scratch catch-up not assessed: "
                + ("no transfer strategy was run at the sizes scratch was run." if has_scr else f"no `{BASELINE_STRATEGY}` runs."))
    start = None
    for i in range(len(comparable) - 1, -1, -1):
        if not comparable[i].test.not_below:
            break
        start = i
    if start is None:
        c = comparable[-1]
        if not c.test.made:
            return f"Scratch catch-up not tested: at the largest size, {_describe(kind, c.size)}, {_vs(c)}."
        return (f"Scratch never catches up with the best transfer strategy within the sizes tested: at the "
                f"largest, {_describe(kind, c.size)}, it is significantly worse ({_vs(c)}).")
    c = comparable[start]
    where = "already at the smallest size compared" if start == 0 else "from this size on"
    below = comparable[start - 1] if start else None
    unknown = (f" At {_describe(kind, below.size)} the test could not be made ({below.test.note}), so it may catch "
               "up earlier.") if below is not None and not below.test.made else ""
    return (f"Scratch catches up at {_describe(kind, c.size)} ({where}): not significantly worse than the best "
            f"transfer strategy there ({_vs(c)}) and at every larger size tested.{unknown}")


def negative_transfer(kind: str, sk: pd.DataFrame) -> str:
    """Transfer strategies significantly worse than scratch (one-sided, :data:`CLAIM_RULE`), and the pairs
    that could not be tested."""
    flagged, untested, checked = [], [], 0
    for s in sorted(sk["size"].unique()):
        at = _at(sk, s)
        scr = at[at["strategy"] == BASELINE_STRATEGY]
        if scr.empty:
            continue
        sc = scr.iloc[0]
        for _, tr in at[at["strategy"] != BASELINE_STRATEGY].iterrows():
            c = compare(tr, sc)
            if not c.made:
                untested.append(f"{tr['strategy']} at {_describe(kind, s)} ({c.note})")
                continue
            checked += 1
            if c.below:
                flagged.append(f"{tr['strategy']} at {_describe(kind, s)} ({fmt_ms(tr['acc_mean'], tr['acc_std'])} vs "
                               f"scratch {fmt_ms(sc['acc_mean'], sc['acc_std'])}, {fmt_test(c)})")
    rest = f" Not tested: {'; '.join(untested)}." if untested and checked else ""
    if flagged:
        return f"Negative transfer (significantly worse than scratch, one-sided p < {ALPHA}): {'; '.join(flagged)}.{rest}"
    if checked:
        return (f"No negative transfer: none of the {checked} transfer strategy/size pair(s) tested is "
                f"significantly worse than scratch (one-sided, α = {ALPHA}).{rest}")
    if untested:
        return f"Negative transfer not tested: {'; '.join(untested)}."
    return f"Negative transfer not assessed: no transfer strategy was run at a size `{BASELINE_STRATEGY}` was run at."


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
