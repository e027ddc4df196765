"""Successive halving in the grid (``hydra.sweeper.halving``): the rules, apart from the sweeper's loop.

- **Cells.** A cell is a strategy with the sweep's other axes fixed (size, seed, …); its configurations are
  the strategy's grid points. Every configuration of every strategy in the sweep goes through the same rungs;
  a cell with one configuration (the linear probe, which tunes itself) has nothing to halve and runs whole.
- **Rungs.** ``rungs`` are fractions of each run's own budget (``[0.111, 0.333]``, or ``"1/9"``). At a rung
  every configuration still in the cell trains to that fraction of its full-length schedule and pauses there
  (``transferlab.run.rungs``); the best ``ceil(n / reduction_factor)`` by their rung score go on, with every
  configuration tied with the last of them (:func:`promote`); the others are marked ``pruned``. The survivors
  of the last rung train to the whole budget, resuming from their rung: no step is trained twice.
- **Deterministic.** A rung's decisions are taken when all its jobs have returned, from their records (the
  score is a function of the run's validation curve), so a rerun, another launcher or another ``n_jobs``
  promotes the same configurations; a rerun after a kill skips what had finished (paused, pruned, completed).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from transferlab.errors import ConfigError
from transferlab.grid import STRATEGY_KEY, grid_points
from transferlab.record import RunRecord, Status, read_record, write_record
from transferlab.report.selection import tie_break
from transferlab.run.rungs import rung_entry, rung_score

log = logging.getLogger(__name__)

#: the override a rung adds to a job (``++``: also where a user's own config has no such key)
RUNG_OVERRIDE = "++rung_fraction"

Job = list[str]


@dataclass(frozen=True)
class Halving:
    """``hydra.sweeper.halving``: the rungs (increasing fractions of the budget, each < 1) and the reduction factor."""

    rungs: tuple[float, ...]
    reduction_factor: int

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None) -> Halving | None:
        """The halving of a sweep's config; None when not set (every grid point trains the whole budget)."""
        if not spec or not spec.get("rungs"):
            return None
        unknown = set(spec) - {"rungs", "reduction_factor"}
        if unknown:
            raise ConfigError(f"hydra.sweeper.halving has no key {sorted(unknown)}. Fix: give rungs and reduction_factor, "
                              "e.g. hydra.sweeper.halving={rungs:[0.5,0.75],reduction_factor:2}.")
        rungs = tuple(_fraction(r) for r in spec.get("rungs") or ())
        eta = spec.get("reduction_factor", 2)
        if not rungs or any(not 0 < r < 1 for r in rungs) or list(rungs) != sorted(set(rungs)):
            raise ConfigError(f"hydra.sweeper.halving.rungs={list(spec.get('rungs') or [])} must be increasing fractions of "
                              "the budget, each in (0, 1). Fix: e.g. hydra.sweeper.halving.rungs=[0.5,0.75] (or ['1/3','2/3']).")
        if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
            raise ConfigError(f"hydra.sweeper.halving.reduction_factor={eta!r} must be a whole number ≥ 2. "
                              "Fix: hydra.sweeper.halving.reduction_factor=2 (a rung keeps half) or 3 (a third).")
        return cls(rungs, eta)


def _fraction(value: Any) -> float:
    """``0.333``, ``1/3`` or ``"1/3"`` as a float; anything else is a ConfigError."""
    try:
        return float(Fraction(str(value).strip()))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"hydra.sweeper.halving.rungs: {value!r} is not a fraction. Fix: e.g. 0.333 or '1/3'.") from None


def cells(jobs: Sequence[Job], grids: Mapping[str, Any]) -> dict[tuple[str, ...], list[Job]]:
    """The jobs by cell: a job's overrides without its strategy's grid keys (in the order jobs came)."""
    by_cell: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        strategy = next((o.split("=", 1)[1] for o in job if o.split("=", 1)[0] == STRATEGY_KEY), "")
        keys = {k for point in grid_points(strategy, grids.get(strategy)) for k in point}
        by_cell.setdefault(tuple(o for o in job if o.split("=", 1)[0] not in keys), []).append(job)
    return by_cell


def keep_count(n: int, reduction_factor: int) -> int:
    """How many of ``n`` configurations go on from a rung: ``ceil(n / reduction_factor)``, at least one."""
    return max(1, math.ceil(n / reduction_factor))


def score_of(record: RunRecord | None, fraction: float, mode: str, best_key: str = "val/acc_best") -> float | None:
    """A run's score at the rung ``fraction``, from its validation curve (paused, pruned or completed alike);
    None when it has none (failed, or never validated). A completed record written before ``val_curve`` existed
    has only its whole run's best (``best_key``, the monitor's ``_best``): it is scored by that."""
    if record is None or record.status not in (Status.PAUSED, Status.PRUNED, Status.COMPLETED):
        return None
    if not record.val_curve or not record.planned_epochs:
        return (record.metrics or {}).get(best_key) if record.completed else None
    return rung_score(record.val_curve, record.planned_epochs, fraction, mode)


def promote(scored: Sequence[tuple[Path, RunRecord | None, float | None]], reduction_factor: int,
            higher: bool = True) -> list[Path]:
    """The run folders that go on: the best ``keep_count`` by score (None last, never promoted past the count),
    in the report's order (``tie_break``), and every one tied with the last of them. A rung never prunes a
    configuration that scores as well as one it keeps: early scores tie often (all at chance level after one
    epoch of a tiny set, measured in tests/test_halving.py), and a tie broken by the smaller LR would
    systematically favour small LRs, the short-horizon bias (Wu et al. 2018) that halving is prone to."""
    def value(score: float | None) -> float:
        return math.inf if score is None or score != score else -round(score if higher else -score, 9)

    def order(item: tuple[Path, RunRecord | None, float | None]) -> tuple[Any, ...]:
        path, record, score = item
        hparams = record.hparams if record is not None else None
        return (value(score), *tie_break(hparams, record.steps if record is not None and record.completed else None), str(path))

    ranked = sorted(scored, key=order)
    count = keep_count(len(scored), reduction_factor)
    cut = value(ranked[count - 1][2])
    return [path for i, (path, _, score) in enumerate(ranked) if i < count or (value(score) == cut and cut != math.inf)]


def mark_pruned(out_dir: Path, fraction: float, score: float | None) -> None:
    """A paused run the rung stopped for good: its record ``pruned``, its checkpoints deleted (a later sweep
    that promotes it after all starts it over, to the same numbers)."""
    record = read_record(out_dir)
    if record is None or record.status is not Status.PAUSED:
        return  # completed runs stay completed; failed ones as they are
    epoch = int((record.rung or {}).get("epoch") or record.epochs or 0)
    record.status, record.rung = Status.PRUNED, rung_entry(fraction, epoch, score)
    write_record(out_dir, record)
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
