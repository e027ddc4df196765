"""Log the report to Weights & Biases: the summary (with the selection) as a ``wandb.Table``, the figures as images."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.report.paired import PER_SEED


def log_report_to_wandb(summary: pd.DataFrame, png_path: Path | None, project: str,
                        group: str | None = None, images: Mapping[str, Path] | None = None) -> bool:
    """Log the summary (its selection columns included) as a ``wandb.Table`` and the figures (``images`` by
    name, else ``png_path`` as the learning curve) as ``wandb.Image``.

    Uses a run with ``job_type="report"``; respects WANDB_MODE/WANDB_DIR. Never
    raises: any wandb failure becomes a warning and False is returned.
    """
    run = None
    try:
        import wandb

        run = wandb.init(project=project, group=group, job_type="report",
                         config={"n_rows": int(len(summary))})
        scalars = summary.drop(columns=[PER_SEED], errors="ignore")  # the per-seed runs are in results.csv
        table_df = scalars.astype(object).where(scalars.notna(), None)
        payload: dict[str, Any] = {"report/summary": wandb.Table(dataframe=table_df)}
        figures = dict(images) if images is not None else {"learning_curve": png_path}
        for name, path in figures.items():
            if path is not None and Path(path).exists():
                payload[f"report/{name}"] = wandb.Image(str(path))
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
