"""Mean, sample standard deviation and the two-sided Student-t confidence interval over seeds."""

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


def fmt_ms(mean: float, std: float, digits: int = 4) -> str:
    """``mean ± std`` with ``digits`` decimals; ``n/a`` for a missing mean or std."""
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {'n/a' if pd.isna(std) else f'{std:.{digits}f}'}"
