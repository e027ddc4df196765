"""``hydra/sweeper=transferlab_grid``: Hydra's basic sweep, with a tuning grid per strategy.

Written on Hydra's public plugin API (``hydra.plugins.sweeper.Sweeper``, the launcher from ``Plugins``), as
Hydra's own basic sweeper is (it lives in ``hydra._internal``, so it is not subclassed). The expansion is
``transferlab.grid.expand_jobs``; this class parses Hydra's overrides into axes, checks that the jobs compose,
and hands them to the configured launcher in batches (``max_batch_size``), as the basic sweeper does. With
``halving`` each batch (whole cells) goes through successive halving's rungs (``halving``), one launch per rung.
"""

import itertools
import logging
from dataclasses import dataclass, field
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

from hydra_plugins.transferlab_grid.halving import RUNG_OVERRIDE, Halving, cells, mark_pruned, promote, score_of
from transferlab.command_line import error
from transferlab.config.plain import plain
from transferlab.errors import TransferlabError
from transferlab.grid import STRATEGY_KEY, axes_from_overrides, expand_jobs
from transferlab.record import read_record
from transferlab.run.context import job_output_dir

log = logging.getLogger(__name__)


@dataclass
class HalvingConf:
    """Successive halving: ``rungs``, fractions of each run's budget (``[0.5, 0.75]``, or ``['1/9', '1/3']``);
    ``reduction_factor``: a rung keeps ``ceil(n / reduction_factor)`` of a cell's n configurations. No rungs: off."""

    rungs: List[Any] = field(default_factory=list)
    reduction_factor: int = 2


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.transferlab_grid.grid_sweeper.GridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None  # the shared axes: sizes, seeds, strategies
    # per strategy: the hyperparameters to select and their values. An empty dict, not null: OmegaConf cannot
    # merge a command-line dict (++hydra.sweeper.grids={…}) into a null node (AttributeError, measured)
    grids: Dict[str, Any] = field(default_factory=dict)
    halving: HalvingConf = field(default_factory=HalvingConf)  # successive halving; no rungs: every point trains whole


ConfigStore.instance().store(group="hydra/sweeper", name="transferlab_grid", node=GridSweeperConf, provider="transferlab")


def cartesian_jobs(axes: Dict[str, List[str]]) -> List[List[str]]:
    """Every combination of the axes' values, one ``key=value`` list per job (Hydra's basic sweep)."""
    return [list(job) for job in itertools.product(*([f"{k}={v}" for v in values] for k, values in axes.items()))]


class GridSweeper(Sweeper):
    """Every (strategy, grid point, other axes) combination as one job; without grids, the cartesian product."""

    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,
                 grids: Optional[Dict[str, Any]] = None, halving: Optional[Any] = None) -> None:
        self.max_batch_size = max_batch_size
        self.params: Dict[str, str] = dict(params or {})
        self.grids: Dict[str, Any] = plain(grids)
        self.halving_spec: Any = plain(halving)
        self.halving: Optional[Halving] = None  # parsed in sweep(): a bad one is a one-line error there
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
        size = len(jobs) if self.max_batch_size in (None, -1) else max(int(self.max_batch_size), 1)
        if self.halving is None:
            return [jobs[i : i + size] for i in range(0, len(jobs), size)]
        batches: List[List[List[str]]] = [[]]  # whole cells: a rung compares a cell's configurations together
        for cell_jobs in cells(jobs, self.grids).values():
            if batches[-1] and len(batches[-1]) + len(cell_jobs) > size:
                batches.append([])
            batches[-1].extend(cell_jobs)
        return [b for b in batches if b]

    def sweep(self, arguments: List[str]) -> List[Sequence[JobReturn]]:
        """The sweep; bad grids or halving (a ConfigError before any job runs) are one line, exit code 2."""
        try:
            self.halving = Halving.parse(self.halving_spec)
            return self._sweep(arguments)
        except TransferlabError as err:
            error(str(err))
            raise SystemExit(2) from None

    def _sweep(self, arguments: List[str]) -> List[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        batches = self.job_batches(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)  # the sweep's config beside its jobs, as Hydra's basic sweeper
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns: List[Sequence[JobReturn]] = []
        first = 0
        for batch in batches:
            self.validate_batch_is_legal(batch)
            if self.halving is not None:
                returns.extend(self.halve(batch, self.halving))
                continue
            returns.append(self._launch(batch, first))
            first += len(batch)
        return returns

    def _launch(self, jobs: Sequence[Sequence[str]], first: int) -> Sequence[JobReturn]:
        assert self.launcher is not None
        results = self.launcher.launch(jobs, initial_job_idx=first)
        for result in results:
            _ = result.return_value  # re-raises a failed job's error (transferlab.failures lists them instead)
        return results

    def halve(self, batch: List[List[str]], halving: Halving) -> List[Sequence[JobReturn]]:
        """Successive halving over the batch's cells: each rung launched whole, then decided (``halving``)."""
        assert self.config is not None
        higher = str(self.config.get("monitor_mode", "max")) != "min"
        best_key = f"{self.config.get('monitor', 'val/acc')}_best"
        by_cell = cells(batch, self.grids)
        active = {cell: jobs for cell, jobs in by_cell.items() if len(jobs) > 1}
        whole = [job for jobs in by_cell.values() if len(jobs) == 1 for job in jobs]
        returns: List[Sequence[JobReturn]] = []
        for i, fraction in enumerate(halving.rungs):
            jobs = [*(whole if i == 0 else []), *(j for js in active.values() for j in js)]
            rung_jobs = [job if i == 0 and job in whole else [*job, f"{RUNG_OVERRIDE}={fraction:.6g}"] for job in jobs]
            results = self._launch(rung_jobs, 0)
            returns.append(results)
            folders = {tuple(job): job_output_dir(ret) for job, ret in zip(jobs, results)}
            active = {cell: self._decide(js, folders, fraction, (halving.reduction_factor, higher, best_key))
                      for cell, js in active.items()}
            active = {cell: js for cell, js in active.items() if js}
            log.info("halving: rung %d of %d (%.3g of the budget): %d configurations go on", i + 1, len(halving.rungs),
                     fraction, sum(map(len, active.values())))
        last = [job for js in active.values() for job in js]
        if last:
            returns.append(self._launch(last, 0))
        return returns

    @staticmethod
    def _decide(jobs: List[List[str]], folders: Dict[Tuple[str, ...], Optional[Path]], fraction: float,
                rule: Tuple[int, bool, str]) -> List[List[str]]:
        """The cell's jobs that go on from the rung (not yet completed); the others paused are marked pruned.
        ``rule``: the reduction factor, whether higher is better, the monitor's ``_best`` key."""
        reduction_factor, higher, best_key = rule
        started = [(job, folder) for job in jobs if (folder := folders.get(tuple(job))) is not None]
        mode = "max" if higher else "min"  # a job that never started has no folder: it is neither scored nor promoted
        scored = [(folder, record := read_record(folder), score_of(record, fraction, mode, best_key)) for _, folder in started]
        kept = set(promote(scored, reduction_factor, higher)) if scored else set()
        going_on = []
        for (job, folder), (_, record, score) in zip(started, scored):
            if folder not in kept:
                mark_pruned(folder, fraction, score)
            elif record is not None and not record.completed:
                going_on.append(job)
        return going_on

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose one job per distinct set of override keys (Hydra composes every job, about 0.2 s each: 20 s
        before a 105-job study starts); jobs with the same keys differ only in values, which the grid checks."""
        first: Dict[Tuple[str, ...], Sequence[str]] = {}
        for overrides in batch:
            first.setdefault(tuple(sorted(o.split("=", 1)[0] for o in overrides)), overrides)
        super().validate_batch_is_legal(list(first.values()))
