"""A head-only stage that can be solved instead of trained: ``strategy.solver`` and ``strategy.probe``.

``linear_probe`` (its whole run) and ``lp_ft`` (its probing stage) train the head alone on a frozen
backbone. With ``solver=lbfgs`` that head is solved on the cached features (multinomial logistic
regression, L2 strength chosen on the validation split: ``transferlab.probe``); with ``sgd`` the Lightning
loop trains it. ``auto`` is decided by the run's cheap checks (``transferlab.run.probing.resolve_solver``),
which set ``solves_head``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transferlab.probe.options import ProbeOptions, check_solver


class SolvableHead:
    """Mixin for a FreezePolicy whose head-only stage L-BFGS can solve (list it before FreezePolicy)."""

    def __init__(self, solver: str = "auto", probe: ProbeOptions | Mapping[str, Any] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.solver = check_solver(str(solver))
        self.probe = ProbeOptions.from_config(probe)
        #: whether this run solves the head (``solver`` resolved; set before the run is assembled)
        self.solves_head = False

    @property
    def solved_epochs(self) -> int:
        """Leading epochs the solve replaces (the Trainer runs the rest): none unless a subclass says so."""
        return 0
