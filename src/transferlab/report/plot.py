"""The report's figures: ``learning_curve.png`` (test accuracy and training time against the training-set
size), ``sensitivity.png`` (accuracy against the LR) and ``freeze_depth.png`` (accuracy against how many
top blocks train)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transferlab.files import atomic_write
from transferlab.record import DataSize
from transferlab.report.paired import PER_SEED
from transferlab.report.summary import COMBO_KEYS
from transferlab.report.views import DEPTH_COLUMN, LR_COLUMN, fmt_depth


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, png_path: Path, dpi: int) -> Path:
    """Write ``fig`` to ``png_path`` atomically at its exact pixel size (no bbox_inches="tight")."""
    fig.tight_layout()
    png_path = Path(png_path)
    atomic_write(png_path, lambda f: fig.savefig(f, format="png", dpi=dpi), mode=0o644)
    return png_path


def _band(ax: Any, x: np.ndarray, mean: np.ndarray, std: np.ndarray, **kw: Any) -> Any:
    """A line with markers and its ± std band shaded in the same colour; returns the line."""
    (line,) = ax.plot(x, mean, marker="o", **kw)
    s = np.nan_to_num(std)
    ax.fill_between(x, mean - s, mean + s, color=line.get_color(), alpha=0.1 if kw.get("ls") == "--" else 0.2)
    return line


def _line_label(key: tuple, multi: bool) -> str:
    """The last key (strategy or size), with the combination when the figure holds several."""
    return str(key[-1]) if not multi else f"{key[-1]} ({'/'.join(map(str, key[1:5]))})"


def _draw_points(ax: Any, g: pd.DataFrame, xcol: str, color: Any, shift: float) -> None:
    """Every run of the rows of ``g`` (each seed's draw) as a dot at its row's size times ``shift`` (so that
    the strategies' dots at one size sit side by side on the log axis)."""
    xs = [float(r[xcol]) * shift for _, r in g.iterrows() for _ in r[PER_SEED]]
    ys = [run.acc for runs in g[PER_SEED] for run in runs]
    ax.scatter(xs, ys, s=14, color=color, alpha=0.55, linewidths=0, zorder=3)


def _plot_strategies(summary: pd.DataFrame, xcol: str, ax_acc: Any, ax_time: Any) -> None:
    """One line per combination × strategy: accuracy (each draw a dot, the mean ± std shaded) and train time."""
    multi = summary.groupby(list(COMBO_KEYS)).ngroups > 1
    lines = list(summary.groupby([*COMBO_KEYS, "strategy"], sort=True))
    for i, (key, g) in enumerate(lines):
        label = _line_label(key, multi)
        g = g[g[xcol].notna() & (g[xcol] > 0)].sort_values(xcol)
        if g.empty:
            continue
        x = g[xcol].to_numpy(float)
        line = _band(ax_acc, x, g["acc_mean"].to_numpy(float), g["acc_std"].to_numpy(float), label=label)
        _draw_points(ax_acc, g, xcol, line.get_color(), shift=1.04 ** (i - (len(lines) - 1) / 2))
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
    ax_acc.set_title("Test accuracy vs training-set size (dots: each seed's draw; mean ± std)")
    ax_time.set_ylabel("train time (s)")
    ax_time.set_title("Training time vs training-set size (mean)")
    for ax in (ax_acc, ax_time):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title="strategy", fontsize="small")


def plot_learning_curve(summary: pd.DataFrame, png_path: Path,
                        figsize: tuple[float, float] = (11.0, 4.5), dpi: int = 120) -> Path:
    """Two panels: test acc (each draw a dot, mean ± std shaded) and train time vs n_train (else size), log x."""
    plt = _pyplot()
    xcol = "n_train" if summary["n_train"].notna().any() else "size"
    fig, (ax_acc, ax_time) = plt.subplots(1, 2, figsize=figsize, dpi=dpi)
    try:
        _plot_strategies(summary, xcol, ax_acc, ax_time)
        _style_axes(summary, xcol, ax_acc, ax_time)
        return _save(fig, png_path, dpi)
    finally:
        plt.close(fig)


def _panels(plt: Any, n: int, dpi: int) -> tuple[Any, list[Any]]:
    """A figure of ``n`` subplots, up to three a row; the unused ones hidden."""
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.6 * nrows), dpi=dpi, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def plot_sensitivity(view: pd.DataFrame, png_path: Path, dpi: int = 110) -> Path:
    """One subplot per training-set size: validation (dashed) and test (solid) accuracy against the LR
    (log x), one colour per strategy, mean over seeds with ± std shaded (see :func:`~.views.held_fixed`)."""
    plt = _pyplot()
    sizes = sorted(view.groupby(["size_kind", "size"]).groups)
    multi = view.groupby(list(COMBO_KEYS)).ngroups > 1
    fig, axes = _panels(plt, len(sizes), dpi)
    try:
        for ax, (kind, size) in zip(axes, sizes):
            at = view[(view["size_kind"] == kind) & (view["size"] == size)]
            for key, g in at.groupby([*COMBO_KEYS, "strategy"], sort=True):
                g = g.sort_values(LR_COLUMN)
                x = g[LR_COLUMN].to_numpy(float)
                line = _band(ax, x, g["acc_mean"].to_numpy(float), g["acc_std"].to_numpy(float),
                             label=_line_label(key, multi))
                _band(ax, x, g["val_mean"].to_numpy(float), g["val_std"].to_numpy(float), ls="--",
                      color=line.get_color())
            ax.set_xscale("log")
            ax.set(title=DataSize(kind, float(size)).describe(), xlabel="optimizer.lr (log scale)",
                   ylabel="accuracy (solid: test, dashed: val)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(title="strategy", fontsize="small")
        return _save(fig, png_path, dpi)
    finally:
        plt.close(fig)


def plot_freeze_depth(view: pd.DataFrame, png_path: Path, dpi: int = 110) -> Path:
    """One subplot per (combination, strategy) whose runs differ in depth: selected test accuracy against
    the number of unfrozen top blocks (``all``: every block), one line per size, mean ± std shaded."""
    plt = _pyplot()
    panels = list(view.groupby([*COMBO_KEYS, "strategy"], sort=True))
    multi = view.groupby(list(COMBO_KEYS)).ngroups > 1
    fig, axes = _panels(plt, len(panels), dpi)
    try:
        for ax, (key, g) in zip(axes, panels):
            depths = sorted(g[DEPTH_COLUMN].unique())
            pos = {d: i for i, d in enumerate(depths)}
            for (kind, size), line in g.groupby(["size_kind", "size"], sort=True):
                line = line.sort_values(DEPTH_COLUMN)
                _band(ax, np.array([pos[d] for d in line[DEPTH_COLUMN]], float), line["acc_mean"].to_numpy(float),
                      line["acc_std"].to_numpy(float), label=DataSize(kind, float(size)).describe())
            ax.set_xticks(range(len(depths)), [fmt_depth(d) for d in depths])
            ax.set(title=_line_label(key, multi),
                   xlabel="unfrozen top blocks (strategy.unfreeze_top_k)", ylabel="test accuracy (selected)")
            ax.grid(True, alpha=0.3)
            ax.legend(title="training set", fontsize="small")
        return _save(fig, png_path, dpi)
    finally:
        plt.close(fig)
