"""The search space from Hydra's sweep syntax, as hydra-optuna-sweeper reads it: ``interval(a, b)`` and
``tag(log, interval(a, b))`` are float (or int) ranges, ``range(a, b, step)`` a stepped one, ``x,y,z`` or
``choice(x, y)`` a categorical choice; a plain value is fixed for every trial."""

from __future__ import annotations

from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


def _distribution(override: Override) -> BaseDistribution:
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if override.is_interval_sweep():
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(value.start, value.end, log=log)
    raise ValueError(f"{override.input_line}: not a sweep Optuna can search (use interval, range or a choice)")


def search_space(arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """``(distributions, fixed values)`` of the sweeper's ``params`` and the command line's overrides."""
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            distributions[key] = _distribution(override)
            fixed.pop(key, None)
        else:
            fixed[key] = override.get_value_element_as_str()
            distributions.pop(key, None)
    return distributions, fixed


def suggest(trial: optuna.Trial, distributions: dict[str, BaseDistribution]) -> dict[str, Any]:
    """The trial's values, through Optuna's public ``suggest_*`` (an enqueued trial gets its fixed values)."""
    params: dict[str, Any] = {}
    for name, d in distributions.items():
        if isinstance(d, FloatDistribution):
            params[name] = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
        elif isinstance(d, IntDistribution):
            params[name] = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        else:
            params[name] = trial.suggest_categorical(name, d.choices)  # type: ignore[attr-defined]
    return params


def overrides(params: dict[str, Any], fixed: dict[str, str]) -> tuple[str, ...]:
    """A trial's Hydra overrides: its sampled values, then the fixed ones."""
    return tuple(f"{name}={value}" for name, value in {**params, **fixed}.items())
