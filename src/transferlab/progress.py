"""A Hydra callback that prints one line per finished job of a multirun: ``job k of N``."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from transferlab.config.plain import plain
from transferlab.grid import axes_from_overrides, expand_jobs

TOTAL_ENV = "TRANSFERLAB_SWEEP_TOTAL"


def grid_size(config: DictConfig) -> int | None:
    """Number of jobs in a grid sweep (``hydra.sweeper.params``, its tuning ``grids`` and command-line sweeps)."""
    sweeper = config.hydra.get("sweeper", {})
    if "n_trials" in sweeper:  # Optuna
        return int(sweeper.n_trials)
    merged = {str(k): f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()}
    for override in config.hydra.overrides.task:  # the command line wins over the sweep's params
        merged[override.split("=", 1)[0].lstrip("+~")] = override
    overrides = OverridesParser.create().parse_overrides(list(merged.values()))
    if sweeper.get("grids"):
        return len(expand_jobs(axes_from_overrides(overrides), plain(sweeper.grids)))
    sizes = [len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1 for o in overrides]
    return math.prod(sizes) if sizes else 1


class JobProgress(Callback):
    """``[transferlab] job 3 of 45 done (12.3 s): strategy=finetune,… test/acc=0.9123``."""

    def __init__(self) -> None:
        self.started: float = time.perf_counter()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            total = grid_size(config)
        except Exception:  # noqa: BLE001 - progress must never stop a sweep
            total = None
        if total:
            os.environ[TOTAL_ENV] = str(total)  # inherited by launcher workers
            print(f"[transferlab] multirun of {total} jobs → {config.hydra.sweep.dir}", flush=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.perf_counter()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if TOTAL_ENV not in os.environ:  # a single run prints its own summary
            return
        num = int(config.hydra.job.get("num", 0)) + 1
        total = os.environ.get(TOTAL_ENV, "?")
        elapsed = time.perf_counter() - self.started
        name = Path(str(config.hydra.runtime.output_dir)).name or "defaults"  # the run folder (transferlab.naming)
        shown = _outcome(job_return, str(config.optimized_metric))
        print(f"[transferlab] job {num} of {total} done ({elapsed:.1f} s): {name} {shown}", flush=True)


def _outcome(job_return: JobReturn, metric: str) -> str:
    """``val/acc_best=0.9123``, or why the job failed, through Hydra's public ``JobReturn.return_value`` (it
    re-raises a failed job's exception). A job that caught its own error returned NaN and printed it."""
    try:
        value = job_return.return_value
    except Exception as err:  # noqa: BLE001 - the job's own exception, shown in one line
        return f"failed: {type(err).__name__}: {err}"
    if isinstance(value, float) and value == value:
        return f"{metric}={value:.4f}"
    return "failed (its error is printed above)"
