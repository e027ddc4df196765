"""Two strategies at one size compared over the draws they share: paired where the runs pair, else Welch.

At one seed every strategy trains on the same draw of training examples (``draw`` in ``result.json``), is
selected on the same validation split and starts from the same source model (``source_seed``). So two
strategies are compared seed by seed on their selected configurations (one per strategy, size and seed,
:mod:`~transferlab.report.selection`): the mean paired difference with its 95 % interval, a paired t-test on
the differences (``scipy.stats.ttest_rel``) and the share of draws on which one beats the other (P(A>B),
Bouthillier et al. 2021; a tie counts half). Runs that cannot be paired (see :func:`unpaired_reason`) are
compared by Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``), with a note saying why. A test is
made only where it can be: 2 or more paired draws (Welch: 2 or more runs a side, with some spread); else
the comparison is *not tested* and no claim rests on it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from transferlab.record import DataSize
from transferlab.report.stats import ALPHA, fmt_p, mean_ci

#: the summary column that holds a cell's selected runs, one :class:`SeedResult` each
PER_SEED = "per_seed"
#: the tests a :class:`Comparison` can rest on
PAIRED, WELCH, UNTESTED = "paired t-test", "Welch's t-test", "not tested"


@dataclass(frozen=True)
class SeedResult:
    """One selected run of a (strategy, size) cell: its seed, its draw, its source model's seed, its test accuracy."""

    seed: int | None
    draw: str | None
    source_seed: int | None
    acc: float


def _int(v: Any) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def _text(v: Any) -> str | None:
    return None if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)


def per_seed(group: pd.DataFrame) -> tuple[SeedResult, ...]:
    """The runs of a summary group (columns ``seed``, ``draw``, ``source_seed``, ``acc``), ordered by seed."""
    runs = [SeedResult(_int(r["seed"]), _text(r["draw"]), _int(r["source_seed"]), float(r["acc"]))
            for _, r in group.iterrows() if not pd.isna(r["acc"])]
    return tuple(sorted(runs, key=lambda r: (r.seed is None, r.seed or 0)))


def unpaired_reason(a: Sequence[SeedResult], b: Sequence[SeedResult]) -> str:
    """Why the runs of two cells cannot be paired seed by seed ("" when they can): a run without a seed or
    several at one seed, a seed one side lacks, a draw not recorded, draws or source models that differ."""
    for side in (a, b):
        seeds = [r.seed for r in side]
        if None in seeds:
            return "a run without a seed"
        if len(set(seeds)) < len(seeds):
            return "several runs at one seed"
    missing = sorted({r.seed for r in a} ^ {r.seed for r in b})  # type: ignore[type-var]
    if missing:
        return f"seed {', '.join(map(str, missing))} run for one side only"
    for x, y in zip(a, b):  # both ordered by seed, and the same seeds
        if x.draw is None or y.draw is None:
            return f"the draw at seed {x.seed} is not recorded"
        if x.draw != y.draw:
            return f"the draws differ at seed {x.seed}"
        if x.source_seed is not None and y.source_seed is not None and x.source_seed != y.source_seed:
            return f"the source models differ at seed {x.seed}"
    return ""


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` at one size: the test made (:data:`PAIRED`, :data:`WELCH` or :data:`UNTESTED`) and
    what it found."""

    test: str
    paired: bool  # whether the runs paired seed by seed (else the test, if any, is Welch's)
    n: int  # paired draws; unpaired, the smaller side's runs
    p: float | None  # one-sided p-value for a's test accuracy being below b's; None: no test made
    diff: float  # a − b: the mean paired difference, or (unpaired) the difference of the means
    ci: tuple[float, float]  # two-sided 95 % Student-t interval of the mean paired difference (NaN unpaired)
    wins: float | None  # P(a > b): the share of the paired draws on which a beats b, a tie counting half
    note: str = ""  # why the runs were not paired, or why no test was made

    @property
    def made(self) -> bool:
        return self.p is not None

    @property
    def below(self) -> bool:
        """Whether a is significantly below b (p < α)."""
        return self.p is not None and self.p < ALPHA

    @property
    def not_below(self) -> bool:
        """Whether a test was made and a is not significantly below b (p ≥ α)."""
        return self.p is not None and self.p >= ALPHA


def _p(run: Any) -> float | None:
    """A scipy test's p-value, or None where it is undefined (no spread); scipy's warnings about it silenced."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(run().pvalue)
    return None if math.isnan(p) else p


def _paired(x: np.ndarray, y: np.ndarray) -> Comparison:
    d = x - y
    mean, _, low, high = mean_ci(d)
    wins = float(np.mean((d > 0) + 0.5 * (d == 0)))
    if len(d) < 2:
        return Comparison(UNTESTED, True, len(d), None, mean, (low, high), wins, f"{len(d)} paired draw, a test needs 2")
    p = _p(lambda: stats.ttest_rel(x, y, alternative="less"))
    if p is None:
        return Comparison(UNTESTED, True, len(d), None, mean, (low, high), wins, "the same accuracy on every paired draw")
    return Comparison(PAIRED, True, len(d), p, mean, (low, high), wins)


def _welch(x: np.ndarray, y: np.ndarray, reason: str) -> Comparison:
    n = min(len(x), len(y))
    diff = float(x.mean() - y.mean()) if n else math.nan
    why = f"not paired: {reason}"
    p = None if n < 2 else _p(lambda: stats.ttest_ind(x, y, equal_var=False, alternative="less"))
    if p is None:
        lack = "fewer than 2 runs on a side" if n < 2 else "no spread on either side"
        return Comparison(UNTESTED, False, n, None, diff, (math.nan, math.nan), None, f"{why}, and {lack}")
    return Comparison(WELCH, False, n, p, diff, (math.nan, math.nan), None, why)


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> Comparison:
    """``a`` against ``b``, two summary rows of one size (their :data:`PER_SEED` runs): paired over the seeds
    when the runs pair, else Welch's t-test; ``p`` is one-sided, for a below b."""
    runs_a, runs_b = a[PER_SEED], b[PER_SEED]
    x, y = (np.array([r.acc for r in runs], dtype=float) for runs in (runs_a, runs_b))
    reason = unpaired_reason(runs_a, runs_b)
    return _welch(x, y, reason) if reason else _paired(x, y)


def fmt_test(c: Comparison) -> str:
    """How a claim names its test: ``paired t-test, n=5, p=0.004``, ``Welch's t-test, p=0.020; not paired: …``
    or ``not tested: …``."""
    if c.test == PAIRED:
        return f"{PAIRED}, n={c.n}, {fmt_p(c.p)}"
    if c.test == WELCH:
        return f"{WELCH}, {fmt_p(c.p)}; {c.note}"
    return f"{UNTESTED}: {c.note}"


def _signed(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:+.4f}"


def _pair_row(kind: str, size: float, a: pd.Series, b: pd.Series) -> list[str]:
    """One line of the comparisons table: ``a`` (the higher mean) against ``b``."""
    ab, p_above = compare(a, b), compare(b, a).p  # a − b and its interval; p for b below a
    interval = "" if math.isnan(ab.ci[0]) else f" [{_signed(ab.ci[0])}, {_signed(ab.ci[1])}]"
    return [DataSize(kind, float(size)).describe(), f"{a['strategy']} vs {b['strategy']}",
            str(ab.n) if ab.paired else "—",
            _signed(ab.diff) + interval, fmt_p(p_above) if p_above is not None else "not tested",
            "n/a" if ab.wins is None else f"{ab.wins:.2f}", ab.test + (f" ({ab.note})" if ab.note else "")]


COMPARISON_HEADER = ["size", "A vs B", "paired draws", "A − B: mean [95% CI]", "p (one-sided, A > B)",
                     "P(A>B): share of draws", "test"]


def comparison_rows(sub: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one combination's pairwise comparisons: at each size every pair of strategies, the
    one with the higher mean first."""
    rows = []
    for (kind, size), at in sub.groupby(["size_kind", "size"], sort=True):
        ranked = at.sort_values(["acc_mean", "strategy"], ascending=[False, True], kind="stable")
        for (_, a), (_, b) in combinations(ranked.iterrows(), 2):
            rows.append(_pair_row(str(kind), float(size), a, b))
    return COMPARISON_HEADER, rows
