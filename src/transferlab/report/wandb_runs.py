"""Tell each run's own W&B run whether the report selected it (``selected: true/false`` in its summary),
never making a second W&B run of a job: after any number of reports each job has exactly one.

- An **online** run is updated where it is, through W&B's public API (``wandb.Api().run(path).summary.update``).
- An **offline** run is left as it is (resuming it offline to write the flag would add one more
  ``offline-run-*`` folder, a run with the same id, per report). Its selection is in the report's
  ``results.csv`` (``selected``, ``wandb.id``, ``wandb.project``…) and in the report's own W&B run (the table
  ``report/selection``). Once the runs are uploaded (``wandb sync``), ``transferlab-report
  --wandb-apply-selection REPORT_DIR`` writes it into their summaries through the same API.

W&B trouble is a warning, never an error.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

DEFAULT_PROJECT = "transferlab"  # conf/logger/wandb.yaml's default when $WANDB_PROJECT is unset
#: the summary key that says whether the report selected a run
SELECTED = "selected"


@dataclass
class MarkResult:
    """What :func:`mark_selected` or :func:`apply_selection` did."""

    marked: int = 0
    offline: list[str] = field(default_factory=list)  # offline run folders, left for apply_selection
    failed: list[str] = field(default_factory=list)  # "path: error"
    seconds: float = 0.0


def _text(row: pd.Series, key: str) -> str | None:
    v = row.get(key)
    return None if v is None or (isinstance(v, float) and pd.isna(v)) or v is pd.NA or v == "" else str(v)


def _hydra_logger(row: pd.Series) -> dict[str, Any]:
    """``logger.project``/``entity`` of the run's Hydra config (``.hydra/config.yaml`` beside result.json)."""
    try:
        cfg = OmegaConf.load(Path(row["path"]).parent / ".hydra" / "config.yaml")
        return {k: OmegaConf.select(cfg, f"logger.{k}", default=None) for k in ("project", "entity")}
    except Exception:  # noqa: BLE001 - no config, or one that does not resolve: fall back to the default
        return {}


def project_of(row: pd.Series) -> tuple[str, str | None]:
    """(project, entity) of a run's W&B run: the record's ``wandb.project`` when it has one, else its Hydra
    config's ``logger.project``, else ``$WANDB_PROJECT`` or ``transferlab``."""
    hydra = {} if _text(row, "wandb.project") else _hydra_logger(row)
    project = _text(row, "wandb.project") or hydra.get("project") or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
    entity = _text(row, "wandb.entity") or hydra.get("entity") or os.environ.get("WANDB_ENTITY")
    return str(project), (str(entity) if entity else None)


def run_path(row: pd.Series) -> str:
    """``[entity/]project/id`` of a run's W&B run, as ``wandb.Api().run`` takes it (no entity: the API's default)."""
    project, entity = project_of(row)
    return "/".join(p for p in (entity, project, _text(row, "wandb.id")) if p)


def _runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The completed runs of ``frame`` that have a W&B run."""
    if "wandb.id" not in frame or frame.empty:
        return frame.iloc[0:0]
    has_id = frame["wandb.id"].map(lambda v: isinstance(v, str) and v != "")
    return frame[frame["counted"].astype(bool) & has_id]


def _update(api: Any, rows: Iterable[tuple[Any, pd.Series]], result: MarkResult) -> None:
    """``selected`` into the summary of each row's W&B run, through the public API; a failure per run is listed."""
    for _, row in rows:
        try:
            api.run(run_path(row)).summary.update({SELECTED: bool(row[SELECTED])})
            result.marked += 1
        except Exception as exc:  # noqa: BLE001 - the report must not break on W&B trouble
            result.failed.append(f"{row['path']}: {type(exc).__name__}: {exc}")


def _with_api(rows: pd.DataFrame, result: MarkResult) -> MarkResult:
    """Update ``rows`` through ``wandb.Api()``; W&B that cannot load or log in is a warning."""
    start = time.perf_counter()
    if not rows.empty:
        try:
            import wandb

            _update(wandb.Api(), rows.iterrows(), result)
        except Exception as exc:  # noqa: BLE001
            result.failed.append(f"wandb.Api: {type(exc).__name__}: {exc}")
    if result.failed:
        warnings.warn(f"could not mark {len(result.failed)} W&B run(s) (first: {result.failed[0]}); the report "
                      "files are unaffected", RuntimeWarning, stacklevel=3)
    result.seconds = time.perf_counter() - start
    return result


def mark_selected(frame: pd.DataFrame) -> MarkResult:
    """Write ``selected`` into the W&B summary of every completed online run of ``frame``
    (:class:`Selection.frame`); list the offline ones (:func:`apply_selection` marks them once uploaded).
    Never raises."""
    runs = _runs(frame)
    if runs.empty or os.environ.get("WANDB_MODE") == "disabled":
        return MarkResult()
    mode = runs["wandb.mode"].astype(str) if "wandb.mode" in runs else pd.Series("", index=runs.index)
    online = mode == "online"
    offline = [str(d) for d in runs.loc[~online, "wandb.dir"]] if "wandb.dir" in runs else []
    return _with_api(runs[online], MarkResult(offline=offline))


def apply_selection(results_csv: Path) -> MarkResult:
    """Write the selection a report made (its ``results.csv``) into the W&B summaries of its runs, through
    the public API: for offline runs, once they are uploaded with ``wandb sync``. Never raises for W&B."""
    frame = pd.read_csv(results_csv, dtype={"wandb.id": str, "wandb.project": str, "wandb.entity": str})
    return _with_api(_runs(frame), MarkResult())


def sync_patterns(offline_dirs: Iterable[str]) -> list[str]:
    """``wandb sync`` arguments for the given offline run folders: ``<sweep>/*/wandb/offline-run-*`` per sweep
    folder (a job's folder holds ``wandb/offline-run-*``)."""
    return sorted({str(Path(d).parent.parent.parent / "*" / "wandb" / "offline-run-*") for d in offline_dirs})
