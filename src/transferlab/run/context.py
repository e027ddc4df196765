"""Where this process runs: Hydra's output folder and mode, and its rank among DDP processes."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from transferlab.errors import ConfigError


def output_dir(cfg: DictConfig) -> Path:
    """The run's output folder: Hydra's, or ``cfg.paths.output_dir`` outside a Hydra app."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("paths", {}).get("output_dir"):
        return Path(cfg.paths.output_dir)
    raise ConfigError("no output folder: run through transferlab-train, or set paths.output_dir.")


def job_output_dir(job: JobReturn) -> Path | None:
    """A launched job's run folder, from the Hydra config it ran with (every launcher hands it back to the
    sweeper); None for a job that never started."""
    output = OmegaConf.select(job.hydra_cfg, "hydra.runtime.output_dir") if job.hydra_cfg is not None else None
    return None if output is None else Path(str(output))


def launch_dir() -> Path:
    """The folder the command was launched from, which relative paths in the config are taken against:
    Hydra's ``hydra.runtime.cwd`` (composed in the launching process for the basic and joblib launchers; a
    submitit or SLURM job starts in the folder it was submitted from), else this process's working folder."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.cwd)
    return Path.cwd()


def is_multirun() -> bool:
    """Whether this is a job of a Hydra multirun (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_overrides() -> list[str]:
    """This job's command-line overrides (a sweep's grid point among them), as Hydra's ``overrides.task``;
    none outside a Hydra app."""
    if HydraConfig.initialized():
        return [str(o) for o in HydraConfig.get().overrides.task]
    return []


def rank() -> int:
    """This process's global rank (0 without DDP), from the launcher's environment."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", os.environ.get("SLURM_PROCID", 0))))


def in_slurm_job() -> bool:
    """Whether this process runs inside a SLURM job (where preemption and time limits are routine)."""
    return "SLURM_JOB_ID" in os.environ


def cache_dir(cfg: DictConfig) -> Path:
    """The shared cache folder (feature cache, source weights): ``paths.cache_dir``."""
    return Path(cfg.paths.cache_dir).expanduser().resolve()
