"""Experiment tracking: CSV, none, or Weights & Biases (offline when there is no key or network)."""

from __future__ import annotations

import logging
import os
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from transferlab.errors import ConfigError
from transferlab.redaction import redact
from transferlab.wandb_access import wandb_mode

log = logging.getLogger(__name__)


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


class _RunConfigWandbLogger(WandbLogger):
    """A WandbLogger that keeps the resolved Hydra config as the run config.

    Lightning logs the LightningModule's own hyperparameters too (``backbone="resnet18"``,
    ``optimizer="adamw"``…); at the top level they would overwrite the config groups of the same
    name, so they go under ``module`` instead.
    """

    def log_hyperparams(self, params: Any) -> None:  # type: ignore[override]
        params = dict(params) if isinstance(params, Mapping) else dict(vars(params))
        super().log_hyperparams({"module": params})


def _new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _finish_active_run(exit_code: int = 1) -> None:
    """Finish a W&B run still active in this process (left by a job that died), so the next job never
    continues it: WandbLogger reuses ``wandb.run`` when there is one, whatever ``reinit`` says."""
    try:
        import wandb

        if wandb.run is not None:
            log.warning("W&B: run %s of an earlier job was still active; finishing it.", wandb.run.id)
            wandb.run.finish(exit_code=exit_code)
    except Exception as err:  # noqa: BLE001 - tracking must never stop a run
        log.warning("W&B: could not finish the earlier run (%s).", err)


def _wandb_logger(
    cfg: Mapping[str, Any], out_dir: Path, run_config: Mapping[str, Any], run_name: str, group: str, job_type: str, tags: list[str]
) -> Logger | None:
    """A WandbLogger for this run alone, or None when W&B cannot start at all (the run goes on without it).

    Online when asked and possible, else offline; online failing to start falls back to offline, and
    offline failing too means no W&B for this run — both with a warning. The run id is kept in the
    output folder so a resumed run continues its W&B run; a W&B agent's run id (``WANDB_RUN_ID``) wins.
    """
    mode = wandb_mode(cfg.get("mode"))
    if mode == "disabled":
        log.info("W&B: disabled (logger.mode=disabled); no W&B run.")
        return None
    try:
        import wandb  # noqa: F401
    except ImportError as err:
        log.warning("W&B: cannot import wandb (%s); this run continues without W&B.", err)
        return None
    _finish_active_run()
    id_file = out_dir / "wandb_id.txt"
    run_id = os.environ.get("WANDB_RUN_ID") or (id_file.read_text().strip() if id_file.is_file() else "") or _new_run_id()
    id_file.parent.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run_id)
    common = dict(
        project=cfg.get("project") or "transferlab",
        entity=cfg.get("entity"),
        name=run_name,
        group=group,
        job_type=job_type,
        tags=tags,
        id=run_id,
        resume="allow",
        save_dir=str(out_dir),
        config=redact(dict(run_config)),
        reinit="finish_previous",  # one W&B run per job, also for many jobs in one process (multirun)
    )
    errors: list[str] = []
    for attempt in dict.fromkeys([mode, "offline"]):
        try:
            logger = _RunConfigWandbLogger(mode=attempt, **common)
            _ = logger.experiment  # start it now, so a failure falls back here and not mid-run
        except Exception as err:  # noqa: BLE001 - tracking must never lose a run
            errors.append(f"{attempt}: {type(err).__name__}: {err}")
            _finish_active_run()
            continue
        if errors:
            log.warning(
                "W&B failed to start online (%s); logging offline instead. Sync later: wandb sync %s",
                errors[0],
                Path(logger.experiment.dir).parent,
            )
        return logger
    log.warning("W&B could not start, not even offline (%s); this run continues without W&B.", "; ".join(errors))
    return None


def wandb_info(logger: Logger | None) -> dict[str, Any] | None:
    """``{id, mode, dir, project, entity, group, name}`` of the logger's W&B run (``dir``: the folder
    ``wandb sync`` takes), or None."""
    if not isinstance(logger, WandbLogger):
        return None
    try:
        run = logger.experiment
        mode = "offline" if run.offline else str(run.settings.mode)  # offline also when Lightning said "dryrun"
        return {"id": run.id, "mode": mode, "dir": str(Path(run.dir).parent), "project": run.project, "entity": run.entity,
                "group": run.group, "name": run.name}
    except Exception as err:  # noqa: BLE001
        log.warning("W&B: cannot read the run's id and folder (%s).", err)
        return None


def wandb_summary(logger: Logger | None, metrics: Mapping[str, float], result_path: Path,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Write final metrics, ``extra`` entries and the ``result.json`` path to the W&B summary, finish the run,
    return :func:`wandb_info`. W&B trouble here is a warning, never an error: the run has completed."""
    if not isinstance(logger, WandbLogger):
        return None
    info = wandb_info(logger)
    try:
        run = logger.experiment
        for key, value in {**metrics, **(extra or {})}.items():
            run.summary[key] = value
        run.summary["result_json"] = str(result_path)
    except Exception as err:  # noqa: BLE001
        log.warning("W&B: could not write the summary (%s).", err)
    finish_wandb(logger, exit_code=0)
    return info


def finish_wandb(logger: Logger | None, exit_code: int, preempted: bool = False) -> None:
    """Finish the logger's W&B run (``exit_code`` 1 marks it failed; ``preempted``: W&B shows it preempted,
    and the resumed run continues the same id from ``wandb_id.txt``); never raises."""
    if not isinstance(logger, WandbLogger):
        return
    try:
        if preempted:
            logger.experiment.mark_preempting()
        logger.experiment.finish(exit_code=exit_code)
    except Exception as err:  # noqa: BLE001
        log.warning("W&B: could not finish the run (%s).", err)
