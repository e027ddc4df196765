"""Experiment tracking: CSV, none, or Weights & Biases (offline when there is no key or network)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger

from transferlab.errors import ConfigError
from transferlab.results import redact

log = logging.getLogger(__name__)


def wandb_mode(requested: str | None) -> str:
    """``online`` only when asked (or ``auto``) and a key and the network are there; else ``offline``."""
    env = os.environ.get("WANDB_MODE")
    mode = (requested or "auto") if requested not in (None, "auto") else (env or "auto")
    if mode in ("offline", "disabled", "dryrun"):
        return "offline" if mode == "dryrun" else mode
    has_key = bool(os.environ.get("WANDB_API_KEY")) or _netrc_has_wandb()
    if not has_key or not _reachable("api.wandb.ai", 443):
        if mode == "online":
            log.warning("W&B: no API key or no network; logging offline instead (sync later with `wandb sync`).")
        return "offline"
    return "online"


def _netrc_has_wandb() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def _reachable(host: str, port: int, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def build_logger(
    logger_cfg: Mapping[str, Any],
    out_dir: Path,
    run_config: Mapping[str, Any],
    run_name: str,
    group: str,
    job_type: str,
    tags: list[str],
) -> Logger | None:
    """The Lightning logger for ``logger=NAME`` (``csv``, ``none`` or ``wandb``)."""
    name = logger_cfg.get("name", "none")
    if name == "none":
        return None
    if name == "csv":
        return CSVLogger(save_dir=str(out_dir), name="csv", version="")
    if name == "wandb":
        return _wandb_logger(logger_cfg, out_dir, run_config, run_name, group, job_type, tags)
    raise ConfigError(f"logger={name!r} is unknown; choose wandb, csv or none.")


def _wandb_logger(
    cfg: Mapping[str, Any], out_dir: Path, run_config: Mapping[str, Any], run_name: str, group: str, job_type: str, tags: list[str]
) -> Logger:
    """A WandbLogger for this run alone; its id is kept in the output folder so a resume continues it."""
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    id_file = out_dir / "wandb_id.txt"
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]  # wandb.util.generate_id is gone
    id_file.parent.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run_id)
    mode = wandb_mode(cfg.get("mode"))
    common = dict(
        project=cfg.get("project", "transferlab"),
        entity=cfg.get("entity"),
        name=run_name,
        group=group,
        job_type=job_type,
        tags=tags,
        id=run_id,
        resume="allow",
        save_dir=str(out_dir),
        config=redact(dict(run_config)),
        reinit="finish_previous",
    )
    try:
        logger = WandbLogger(mode=mode, **common)
        _ = logger.experiment  # start it now, so a failure falls back here and not mid-run
        return logger
    except Exception as err:  # noqa: BLE001 - tracking must never lose a run
        if mode == "offline":
            raise
        log.warning("W&B failed to start online (%s); logging offline instead.", err)
        logger = WandbLogger(mode="offline", **common)
        _ = logger.experiment
        return logger


def wandb_summary(logger: Logger | None, metrics: Mapping[str, float], result_path: Path) -> dict[str, Any] | None:
    """Write final metrics to the W&B summary, finish the run and return its id/mode/dir for the record."""
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return None
    run = logger.experiment
    info = {"id": run.id, "mode": "offline" if run.settings._offline else "online", "dir": str(Path(run.dir).parent)}
    try:
        for key, value in metrics.items():
            run.summary[key] = value
        run.summary["result_json"] = str(result_path)
    finally:
        run.finish()
    return info
