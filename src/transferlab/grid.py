"""Tuning grids: per strategy, the hyperparameters selected on validation and their values, expanded into
one override list per job, so that any Hydra launcher (basic, joblib, submitit, SLURM arrays) runs every
grid point as an independent job in its own folder and a re-run skips the completed ones.

A sweep declares ``hydra.sweeper.grids``: for each strategy either a mapping ``key: v1,v2,…`` (the
cartesian product of its keys) or a list of points ``[{key: value, …}, …]``; ``{}`` is one point (a
strategy that tunes itself, like the linear probe's regularisation path). The sweep's other axes
(``hydra.sweeper.params`` and the command line: sizes, seeds, strategies) multiply every strategy's grid.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from transferlab.errors import ConfigError

STRATEGY_KEY = "strategy"


def _values(value: Any) -> list[str]:
    """``"a,b"``, ``[a, b]`` or ``a`` as a list of override value strings."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(",")]


def grid_points(strategy: str, spec: Any) -> list[dict[str, str]]:
    """The grid points of one strategy's spec (see the module doc), each a ``{key: value}`` of strings."""
    if spec is None or (isinstance(spec, Mapping) and not spec):
        return [{}]
    if isinstance(spec, Mapping):
        keys = list(spec)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(_values(spec[k]) for k in keys))]
    if isinstance(spec, Sequence) and not isinstance(spec, str) and all(isinstance(p, Mapping) for p in spec):
        return [{k: str(v) for k, v in point.items()} for point in spec]
    raise ConfigError(
        f"hydra.sweeper.grids.{strategy}={spec!r}: give a mapping of key: v1,v2,… or a list of points [{{key: value}}, …]."
    )


def check_points(strategy: str, points: list[dict[str, str]]) -> None:
    """Learning rates and LR scales in a grid must be positive numbers (checked before any job runs)."""
    for point in points:
        for key, value in point.items():
            if "lr" not in key.split(".")[-1]:
                continue
            try:
                ok = float(value) > 0
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(
                    f"hydra.sweeper.grids.{strategy}: {key}={value} is not a positive number. Fix: give learning "
                    "rates (and LR scales) > 0, e.g. 0.001,0.003,0.01."
                )


def _strategies(axes: Mapping[str, list[str]], grids: Mapping[str, Any], known: Collection[str]) -> list[str]:
    """The strategies to run (the axes' ``strategy`` values, else every strategy with a grid), each checked."""
    for name in grids:
        if known and name not in known:
            close = difflib.get_close_matches(str(name), known, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"hydra.sweeper.grids.{name}: there is no strategy {name!r}.{hint} Strategies: {sorted(known)}.")
    chosen = list(axes.get(STRATEGY_KEY) or grids)
    for name in chosen:
        if name not in grids:
            raise ConfigError(
                f"strategy={name} has no tuning grid in this sweep (hydra.sweeper.grids lists {sorted(grids)}). Fix: "
                f"add hydra.sweeper.grids.{name} (e.g. {{optimizer.lr: 0.001,0.003,0.01}}) or choose one of those strategies."
            )
    return chosen


def axes_from_overrides(overrides: Sequence[Any]) -> dict[str, list[str]]:
    """Parsed Hydra overrides (``hydra.core.override_parser.types.Override``) as ``{key: [values]}``; later
    ones win, as on Hydra's command line. Only discrete sweeps (``a,b,c``, ``range``, ``choice``)."""
    axes: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes[key] = [override.get_value_element_as_str()]
        elif override.is_discrete_sweep():
            axes[key] = list(override.sweep_string_iterator())
        else:
            raise ConfigError(f"{key}: a tuning grid sweeps discrete values only (a,b,c or range(…)), not {override.value_type}.")
    return axes


def expand_jobs(axes: Mapping[str, list[str]], grids: Mapping[str, Any], known: Collection[str] = ()) -> list[list[str]]:
    """One ``key=value`` override list per job: each strategy's grid points × the other axes.

    ``axes`` maps keys to their values (the sweep's params, then the command line, which wins); a key the
    axes set that a grid also varies takes the axes' values (the command line narrows the grid).
    """
    jobs: list[list[str]] = []
    shared = {k: v for k, v in axes.items() if k != STRATEGY_KEY}
    for strategy in _strategies(axes, grids, known):
        points = grid_points(strategy, grids[strategy])
        check_points(strategy, points)
        unique: dict[tuple[tuple[str, str], ...], None] = {}
        for point in points:
            unique.setdefault(tuple((k, v) for k, v in point.items() if k not in shared), None)
        for point, combo in itertools.product(unique, itertools.product(*shared.values())):
            jobs.append([f"{STRATEGY_KEY}={strategy}", *(f"{k}={v}" for k, v in point), *(f"{k}={v}" for k, v in zip(shared, combo))])
    return jobs
