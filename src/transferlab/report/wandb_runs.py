"""Tell each run's own W&B run whether the report selected it: ``selected: true/false`` in its summary.

An offline run (``result.json``: ``"wandb": {"id", "mode": "offline", "dir"}``) is resumed offline with its
own id, in the same ``wandb/`` folder as its first offline-run folder, so that
``wandb sync <run>/wandb/offline-run-*`` uploads the flag after the run (the folders sort by time). An
online run is updated through the public API. A run whose offline folder is gone is skipped. W&B trouble
is a warning, never an error. One W&B process serves every resume: about 0.1 s a run after the first
(0.5 s) on this project's 2-core machine.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

DEFAULT_PROJECT = "transferlab"  # conf/logger/wandb.yaml's default when $WANDB_PROJECT is unset


@dataclass
class MarkResult:
    """What :func:`mark_selected` did."""

    marked: int = 0
    skipped: list[str] = field(default_factory=list)  # "path: why"
    failed: list[str] = field(default_factory=list)  # "path: error"
    seconds: float = 0.0


def _text(row: pd.Series, key: str) -> str | None:
    v = row.get(key)
    return None if v is None or (isinstance(v, float) and pd.isna(v)) or v == "" else str(v)


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


def is_offline_run_dir(path: str | None) -> bool:
    """Whether ``path`` is an existing ``…/wandb/offline-run-*`` folder (what ``wandb.init(dir=…)`` writes)."""
    p = Path(path) if path else None
    return p is not None and p.name.startswith("offline-run-") and p.parent.name == "wandb" and p.is_dir()


def _offline(wandb: Any, row: pd.Series, run_dir: Path, selected: bool) -> None:
    project, entity = project_of(row)
    root = run_dir.parent.parent  # wandb.init(dir=root) writes root/wandb/offline-run-<time>-<id>
    settings = wandb.Settings(console="off", save_code=False, disable_git=True, silent=True, x_disable_stats=True,
                              x_disable_meta=True, x_disable_machine_info=True, x_save_requirements=False)
    run = wandb.init(id=_text(row, "wandb.id"), resume="allow", mode="offline", dir=str(root), project=project,
                     entity=entity, reinit="finish_previous", settings=settings)
    try:
        run.summary["selected"] = selected
    finally:
        run.finish()


def _online(wandb: Any, row: pd.Series, selected: bool) -> None:
    project, entity = project_of(row)
    path = "/".join(p for p in (entity, project, _text(row, "wandb.id")) if p)
    run = wandb.Api().run(path)
    run.summary["selected"] = selected
    run.summary.update()


def _mark_one(wandb: Any, row: pd.Series, result: MarkResult) -> None:
    mode, run_dir = _text(row, "wandb.mode"), _text(row, "wandb.dir")
    selected = bool(row["selected"])
    if not _text(row, "wandb.id"):
        return
    if mode == "online":
        _online(wandb, row, selected)
    elif not is_offline_run_dir(run_dir):
        result.skipped.append(f"{row['path']}: {run_dir} is not an existing offline W&B run folder")
        return
    else:
        _offline(wandb, row, Path(run_dir), selected)
    result.marked += 1


def _teardown(wandb: Any) -> None:
    """End this process's W&B session, so that a later wandb.init reads its settings afresh."""
    try:
        wandb.teardown()
    except Exception:  # noqa: BLE001
        pass


def mark_selected(frame: pd.DataFrame) -> MarkResult:
    """Write ``selected`` into the W&B summary of every completed run of ``frame`` (:class:`Selection.frame`)
    that has a W&B run; never raises (a failure per run is listed, a wandb that cannot load is a warning)."""
    result, start = MarkResult(), time.perf_counter()
    runs = frame[frame["counted"].astype(bool)] if "wandb.id" in frame else frame.iloc[0:0]
    if runs.empty or os.environ.get("WANDB_MODE") == "disabled":
        return result
    try:
        import wandb
    except Exception as exc:  # noqa: BLE001 - the report must not break on wandb trouble
        warnings.warn(f"could not import wandb ({exc}); runs' W&B summaries not marked", RuntimeWarning, stacklevel=2)
        return result
    try:
        for _, row in runs.iterrows():
            try:
                _mark_one(wandb, row, result)
            except Exception as exc:  # noqa: BLE001
                result.failed.append(f"{row['path']}: {type(exc).__name__}: {exc}")
    finally:
        if result.marked:
            _teardown(wandb)
    if result.failed:
        warnings.warn(f"could not mark {len(result.failed)} W&B run(s) (first: {result.failed[0]}); the report "
                      "files are unaffected", RuntimeWarning, stacklevel=2)
    result.seconds = time.perf_counter() - start
    return result
