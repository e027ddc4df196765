"""``hydra/sweeper=optuna_study``: Hydra's view of the shared-study sweep in ``_impl`` (Hydra imports every
plugin module at start-up and skips those named ``_*``, so Optuna (0.17 s) is imported only to sweep)."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class SharedOptunaSweeper(Sweeper):
    """One Optuna study that many sweeper processes share; see ``_impl`` and ``config.OptunaStudyConf``."""

    def __init__(self, **options: Any) -> None:
        from hydra_plugins.transferlab_optuna._impl import StudySweep

        self.impl = StudySweep(**options)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)
