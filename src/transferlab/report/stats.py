"""Over seeds: mean, sample standard deviation, the two-sided Student-t confidence interval; the significance
level and how p-values and spreads are written (the tests themselves: :mod:`~transferlab.report.paired`)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats


def t_quantile(p: float, df: float) -> float:
    """Quantile (inverse CDF) of Student's t with ``df`` degrees of freedom."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    return float(stats.t.ppf(p, df))


def mean_ci(values: Iterable[float | None], level: float = 0.95) -> tuple[float, float, float, float]:
    """Return (mean, sample std, ci_low, ci_high), ignoring missing values; std and CI are NaN for n < 2."""
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


#: the significance level every claim of the report is tested at
ALPHA = 0.05


def fmt_p(p: float | None) -> str:
    """``p=0.012``, ``p<0.001``, or ``p n/a`` (no test made)."""
    if p is None:
        return "p n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def fmt_ms(mean: float, std: float, digits: int = 4) -> str:
    """``mean ± std`` with ``digits`` decimals; ``n/a`` for a missing mean or std."""
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {'n/a' if pd.isna(std) else f'{std:.{digits}f}'}"
