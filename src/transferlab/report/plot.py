"""``learning_curve.png``: test accuracy and training time against the training-set size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transferlab.files import atomic_write
from transferlab.report.summary import COMBO_KEYS


def _plot_strategies(summary: pd.DataFrame, xcol: str, ax_acc: Any, ax_time: Any) -> None:
    """One line per combination × strategy: accuracy (mean ± std shaded) and train time."""
    multi = summary.groupby(list(COMBO_KEYS)).ngroups > 1
    for key, g in summary.groupby([*COMBO_KEYS, "strategy"], sort=True):
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


def _style_axes(summary: pd.DataFrame, xcol: str, ax_acc: Any, ax_time: Any) -> None:
    """Log x axis labelled with the sizes actually run, titles, legends."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    xlabel = ("training examples (n_train, log scale)" if xcol == "n_train"
              else "training-set size (log scale)")
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


def plot_learning_curve(summary: pd.DataFrame, png_path: Path,
                        figsize: tuple[float, float] = (11.0, 4.5), dpi: int = 120) -> Path:
    """Two panels: test acc (mean ± std shaded) and train time vs n_train (else size), log x."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    xcol = "n_train" if summary["n_train"].notna().any() else "size"
    fig, (ax_acc, ax_time) = plt.subplots(1, 2, figsize=figsize, dpi=dpi)
    try:
        _plot_strategies(summary, xcol, ax_acc, ax_time)
        _style_axes(summary, xcol, ax_acc, ax_time)
        fig.tight_layout()
        png_path = Path(png_path)
        # no bbox_inches="tight": keep the exact pixel size
        atomic_write(png_path, lambda f: fig.savefig(f, format="png", dpi=dpi), mode=0o644)
    finally:
        plt.close(fig)
    return png_path
