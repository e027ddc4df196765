"""``strategy=NAME`` → a freeze policy: every FreezePolicy subclass in this package, by its ``name``.

Adding a strategy means one class (a module in this package) and one YAML (``conf/strategy/NAME.yaml``);
nothing here changes. A class outside the package is named by ``strategy._target_`` (Hydra's key).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

import hydra.utils

import transferlab.strategies as package
from transferlab.config.typed import Changes, parse_arguments
from transferlab.errors import ConfigError
from transferlab.strategies.base import FreezePolicy


def _subclasses(cls: type[FreezePolicy]) -> list[type[FreezePolicy]]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def _discover() -> dict[str, type[FreezePolicy]]:
    """Import every module of the package, then index the FreezePolicy subclasses by name."""
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    return {cls.name: cls for cls in _subclasses(FreezePolicy) if cls.__module__.startswith(package.__name__)}


POLICIES: dict[str, type[FreezePolicy]] = _discover()


def policy_class(strategy: Mapping[str, Any]) -> type[FreezePolicy]:
    """The class for a strategy config: ``_target_`` (an import path) when given, else ``name``."""
    target = strategy.get("_target_")
    if target:
        try:
            cls = hydra.utils.get_class(str(target))
        except Exception as err:  # noqa: BLE001 - Hydra raises several types for a bad path
            raise ConfigError(f"strategy._target_={target!r} cannot be imported ({err}). Fix: give module.Class.") from err
        if not (isinstance(cls, type) and issubclass(cls, FreezePolicy)):
            raise ConfigError(f"strategy._target_={target!r} is not a transferlab FreezePolicy subclass.")
        return cls
    name = strategy.get("name")
    if name not in POLICIES:
        close = difflib.get_close_matches(str(name), POLICIES, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"strategy={name!r} is unknown;{hint} choose one of {sorted(POLICIES)}.")
    return POLICIES[name]


def policy_arguments(strategy: Mapping[str, Any], changes: Changes | None = None) -> dict[str, Any]:
    """A strategy config's keys (but ``name``, ``_target_``) as its policy class's ``__init__`` arguments, each
    converted to its annotation: the class's signature is the strategy's schema (``config.typed``)."""
    cls = policy_class(strategy)
    return parse_arguments(cls, strategy, "strategy", [] if changes is None else changes,
                           f"strategy={strategy.get('name')}", skip=("name", "_target_"))


def build_policy(strategy: Mapping[str, Any]) -> FreezePolicy:
    """The freeze policy for a ``strategy`` config: its class, given the config's other keys."""
    cls = policy_class(strategy)
    try:
        return cls(**policy_arguments(strategy))
    except TypeError as err:  # a class outside the package with a required argument the config lacks
        raise ConfigError(f"strategy={strategy.get('name')}: {err}. Fix: set the strategy.* key it names.") from err
