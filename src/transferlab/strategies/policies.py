"""The built-in strategies: scratch, linear probe, fine-tune (top k), gradual unfreezing and LP-FT."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transferlab.config.typed import as_override
from transferlab.errors import ConfigError
from transferlab.record import BASELINE_STRATEGY
from transferlab.strategies.base import FreezePolicy
from transferlab.strategies.solvable import SolvableHead


class Scratch(FreezePolicy):
    """Random initialisation; everything trains. The baseline every transfer strategy is compared with."""

    name = BASELINE_STRATEGY
    pretrained = False

    def trainable_top_blocks(self, epoch: int, n_blocks: int) -> int:
        return n_blocks


class LinearProbe(SolvableHead, FreezePolicy):
    """Feature extraction: the backbone is frozen and in eval mode; only the head trains (or is solved:
    ``solver=lbfgs``)."""

    name = "linear_probe"
    frozen_backbone = True

    def trainable_top_blocks(self, epoch: int, n_blocks: int) -> int:
        return 0


class Finetune(FreezePolicy):
    """All blocks (``unfreeze_top_k=None``) or the top k train, the backbone at a scaled-down LR."""

    name = "finetune"

    def __init__(self, unfreeze_top_k: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.unfreeze_top_k = unfreeze_top_k

    def validate(self, n_blocks: int) -> None:
        k = self.unfreeze_top_k
        if k is not None and not 0 <= k <= n_blocks:
            raise ConfigError(
                f"strategy.unfreeze_top_k={k}, but this backbone has {n_blocks} blocks (timm group_matcher "
                f"stages). Fix: use 0..{n_blocks}, or null to fine-tune all of them."
            )

    def trainable_top_blocks(self, epoch: int, n_blocks: int) -> int:
        return n_blocks if self.unfreeze_top_k is None else self.unfreeze_top_k


class Gradual(FreezePolicy):
    """Gradual unfreezing: the head first, then ``blocks_per_milestone`` more blocks from the top
    at each epoch in ``milestones``; blocks never reached stay frozen."""

    name = "gradual"
    static = False

    def __init__(self, milestones: Sequence[int] = (1, 2, 3, 4), blocks_per_milestone: int = 1, **options: Any) -> None:
        super().__init__(**options)
        self.milestones = sorted(int(m) for m in milestones)
        self.blocks_per_milestone = int(blocks_per_milestone)

    def validate(self, n_blocks: int) -> None:
        if not self.milestones or self.milestones[0] < 1:
            raise ConfigError(
                f"strategy.milestones={self.milestones} must be epochs ≥ 1 (epoch 0 trains the head alone)."
            )
        if self.blocks_per_milestone < 1:
            raise ConfigError(f"strategy.blocks_per_milestone={self.blocks_per_milestone} must be ≥ 1.")

    def trainable_top_blocks(self, epoch: int, n_blocks: int) -> int:
        return self.blocks_per_milestone * sum(1 for m in self.milestones if epoch >= m)

    def schedule_shortfall(self, epochs: int) -> tuple[str, int, str | None] | None:
        missed = [m for m in self.milestones if m >= epochs]  # epochs run 0 … epochs-1
        if not missed:
            return None
        what = "only the head trains" if len(missed) == len(self.milestones) else f"milestones {missed} are never reached"
        fitting = list(range(1, epochs))[: len(self.milestones)]
        alternative = f"strategy.milestones={as_override(fitting)}" if fitting else None
        return f"strategy=gradual, strategy.milestones={as_override(self.milestones)}: {what}", max(missed) + 1, alternative


class LpFt(SolvableHead, FreezePolicy):
    """LP-FT: ``lp_epochs`` of linear probing, then every block fine-tunes at the backbone's low LR.

    With ``solver=lbfgs`` the probe is solved on cached features instead (to convergence, L2 chosen on
    validation) and the Trainer runs the fine-tuning epochs alone, from that head: as many as follow the
    ``lp_epochs`` with ``sgd``.
    """

    name = "lp_ft"
    static = False

    def __init__(self, lp_epochs: int = 3, **options: Any) -> None:
        super().__init__(**options)
        self.lp_epochs = int(lp_epochs)

    def validate(self, n_blocks: int) -> None:
        if self.lp_epochs < 1:
            raise ConfigError(f"strategy.lp_epochs={self.lp_epochs} must be ≥ 1 (use strategy=finetune for 0).")

    @property
    def solved_epochs(self) -> int:
        return self.lp_epochs if self.solves_head else 0

    def trainable_top_blocks(self, epoch: int, n_blocks: int) -> int:
        probe_epochs = 0 if self.solves_head else self.lp_epochs  # solved: the Trainer's epochs all fine-tune
        return 0 if epoch < probe_epochs else n_blocks

    def schedule_shortfall(self, epochs: int) -> tuple[str, int, str | None] | None:
        if epochs > self.lp_epochs:
            return None
        what = ("no epoch is left to fine-tune after them (it fine-tunes 1)" if self.solves_head
                else "no epoch is left to fine-tune after them (only the head trains)")
        alternative = f"strategy.lp_epochs={epochs - 1}" if epochs >= 2 else None
        return f"strategy=lp_ft, strategy.lp_epochs={self.lp_epochs}: {what}", self.lp_epochs + 1, alternative
