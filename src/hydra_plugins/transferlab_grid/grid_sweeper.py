"""``hydra/sweeper=transferlab_grid``: Hydra's basic sweep, with a tuning grid per strategy.

Written on Hydra's public plugin API (``hydra.plugins.sweeper.Sweeper``, the launcher from ``Plugins``), as
Hydra's own basic sweeper is (it lives in ``hydra._internal``, so it is not subclassed). The expansion is
``transferlab.grid.expand_jobs``; this class parses Hydra's overrides into axes, checks that the jobs compose,
and hands them to the configured launcher in batches (``max_batch_size``), as the basic sweeper does.
"""

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from transferlab.config.plain import plain
from transferlab.grid import STRATEGY_KEY, axes_from_overrides, expand_jobs

log = logging.getLogger(__name__)


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.transferlab_grid.grid_sweeper.GridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None  # the shared axes: sizes, seeds, strategies
    grids: Optional[Dict[str, Any]] = None  # per strategy: the hyperparameters to select and their values


ConfigStore.instance().store(group="hydra/sweeper", name="transferlab_grid", node=GridSweeperConf, provider="transferlab")


def cartesian_jobs(axes: Dict[str, List[str]]) -> List[List[str]]:
    """Every combination of the axes' values, one ``key=value`` list per job (Hydra's basic sweep)."""
    return [list(job) for job in itertools.product(*([f"{k}={v}" for v in values] for k, values in axes.items()))]


class GridSweeper(Sweeper):
    """Every (strategy, grid point, other axes) combination as one job; without grids, the cartesian product."""

    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,
                 grids: Optional[Dict[str, Any]] = None) -> None:
        self.max_batch_size = max_batch_size
        self.params: Dict[str, str] = dict(params or {})
        self.grids: Dict[str, Any] = plain(grids)
        self.known_strategies: List[str] = []
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher: Optional[Launcher] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.known_strategies = list(hydra_context.config_loader.get_group_options(STRATEGY_KEY))

    def job_batches(self, arguments: List[str]) -> List[List[List[str]]]:
        """The jobs of the sweep's params and the command line (which wins), in batches of ``max_batch_size``."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        axes = axes_from_overrides(parser.parse_overrides([*(f"{k}={v}" for k, v in self.params.items()), *arguments]))
        jobs = expand_jobs(axes, self.grids, self.known_strategies) if self.grids else cartesian_jobs(axes)
        size = len(jobs) if self.max_batch_size in (None, -1) else int(self.max_batch_size)
        return [jobs[i : i + size] for i in range(0, len(jobs), max(size, 1))]

    def sweep(self, arguments: List[str]) -> List[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        batches = self.job_batches(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)  # the sweep's config beside its jobs, as Hydra's basic sweeper
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns: List[Sequence[JobReturn]] = []
        first = 0
        for batch in batches:
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=first)
            for result in results:
                _ = result.return_value  # re-raises a failed job's error (transferlab.failures lists them instead)
            first += len(batch)
            returns.append(results)
        return returns

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose one job per distinct set of override keys (Hydra composes every job, about 0.2 s each: 20 s
        before a 105-job study starts); jobs with the same keys differ only in values, which the grid checks."""
        first: Dict[Tuple[str, ...], Sequence[str]] = {}
        for overrides in batch:
            first.setdefault(tuple(sorted(o.split("=", 1)[0] for o in overrides)), overrides)
        super().validate_batch_is_legal(list(first.values()))
