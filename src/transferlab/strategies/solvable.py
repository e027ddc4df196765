"""A head-only stage that can be solved instead of trained: ``strategy.solver`` and ``strategy.probe``.

``linear_probe`` (its whole run) and ``lp_ft`` (its probing stage) train the head alone on a frozen
backbone. With ``solver=lbfgs`` that head is solved on the cached features (multinomial logistic
regression, L2 strength chosen on the validation split: ``transferlab.probe``); with ``sgd`` the Lightning
loop trains it. ``auto`` is decided by the run's cheap checks (``transferlab.run.probing.resolve_solver``),
which hand it the obstacles; the policy sets ``solves_head`` (``choose_solver``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transferlab.errors import ConfigError
from transferlab.probe.options import ProbeOptions, check_solver


class SolvableHead:
    """Mixin for a FreezePolicy whose head-only stage L-BFGS can solve (list it before FreezePolicy)."""

    def __init__(self, solver: str = "auto", probe: ProbeOptions | Mapping[str, Any] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.solver = check_solver(str(solver))
        self.probe = ProbeOptions.from_config(probe)
        #: whether this run solves the head (``solver`` resolved; set before the run is assembled)
        self.solves_head = False

    def choose_solver(self, obstacles: list[str]) -> None:
        """Resolve ``solver`` into ``solves_head`` (``auto``: lbfgs unless an obstacle stands in its way); a
        ConfigError when ``lbfgs`` was asked for and cannot apply (the first obstacle says why)."""
        if self.solver == "lbfgs" and obstacles:
            raise ConfigError(f"strategy.solver=lbfgs: {obstacles[0]}")
        self.solves_head = self.solver == "lbfgs" or (self.solver == "auto" and not obstacles)

    @property
    def solved_epochs(self) -> int:
        """Leading epochs the solve replaces (the Trainer runs the rest): none unless a subclass says so."""
        return 0
