"""The probe solver's options (``strategy.solver`` and ``strategy.probe.*``), checked once, before anything slow."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from transferlab.config.typed import parse
from transferlab.errors import ConfigError

#: ``strategy.solver``: ``lbfgs`` (the head solved on cached features), ``sgd`` (the Lightning loop),
#: ``auto`` (lbfgs where it applies, see ``transferlab.run.probing.resolve_solver``)
SOLVERS = ("auto", "lbfgs", "sgd")
CLASS_WEIGHTS = (None, "balanced")


@dataclass(frozen=True)
class ProbeOptions:
    """How the L-BFGS probe is solved and its L2 strength λ chosen.

    The objective is ``mean_i w_i·CE(W x_i + b, y_i) + λ/2·‖W‖²`` (the bias is not penalised).
    ``l2``: a fixed λ (no search), or None: λ chosen on the validation split over ``grid`` log-spaced
    values of ``l2_range``, then ``refine`` rounds of bisection (in log λ) around the best.
    ``max_iter`` and a tolerance on max |gradient| stop each fit: ``search_tol`` those of the search, ``tol``
    (scikit-learn's default) the chosen one, solved on from there.
    ``standardize``: fit on features scaled to unit variance on the training subset (the head is
    folded back to the raw features); off by default (measured, see docs/strategies.md). ``class_weight``:
    ``balanced`` weighs each class by n / (k · n_class), as scikit-learn does.
    """

    l2: float | None = None
    l2_range: tuple[float, float] = (1e-6, 1e5)
    grid: int = 12
    refine: int = 2
    max_iter: int = 1000
    tol: float = 1e-4
    search_tol: float = 1e-3
    standardize: bool = False
    class_weight: str | None = None

    def __post_init__(self) -> None:
        low, high = (float(v) for v in self.l2_range)
        if not (0 < low <= high and math.isfinite(high)):
            raise ConfigError(f"strategy.probe.l2_range={list(self.l2_range)} must be [low, high] with 0 < low ≤ high, e.g. [1e-6, 1e5].")
        if self.l2 is not None and not (float(self.l2) >= 0 and math.isfinite(float(self.l2))):
            raise ConfigError(f"strategy.probe.l2={self.l2} must be ≥ 0, or null to choose it on the validation split.")
        if int(self.grid) < 1 or int(self.refine) < 0:
            raise ConfigError(f"strategy.probe.grid={self.grid} must be ≥ 1 and strategy.probe.refine={self.refine} ≥ 0.")
        if int(self.max_iter) < 1 or not (float(self.tol) > 0 and float(self.search_tol) > 0):
            raise ConfigError(f"strategy.probe.max_iter={self.max_iter} must be ≥ 1, strategy.probe.tol={self.tol} and "
                              f"strategy.probe.search_tol={self.search_tol} > 0.")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ConfigError(f"strategy.probe.class_weight={self.class_weight!r} is unknown; use null or balanced.")

    @classmethod
    def from_config(cls, probe: ProbeOptions | Mapping[str, Any] | None) -> ProbeOptions:
        """The options of a ``strategy.probe`` mapping (None: the defaults), each key typed
        (``config.typed``); an unknown key is a ConfigError."""
        if isinstance(probe, ProbeOptions):
            return probe
        return parse(cls, probe, "strategy.probe")

    def l2_grid(self) -> list[float]:
        """The search's coarse grid, largest λ first (the path is solved in this order, warm-started)."""
        if self.l2 is not None:
            return [float(self.l2)]
        low, high = (math.log10(float(v)) for v in self.l2_range)
        n = int(self.grid)
        return [10 ** (high - (high - low) * i / (n - 1)) for i in range(n)] if n > 1 else [10**high]


def check_solver(solver: str) -> str:
    """``strategy.solver`` checked: one of :data:`SOLVERS`."""
    if solver not in SOLVERS:
        raise ConfigError(f"strategy.solver={solver!r} is unknown; choose one of {list(SOLVERS)}.")
    return solver
