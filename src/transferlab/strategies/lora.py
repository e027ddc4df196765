"""LoRA (Hu et al., 2022): low-rank adapters in the backbone's linear and convolutional layers, through peft.

The adapters and the head train; every backbone weight stays frozen, BatchNorm in eval mode. The adapters are
part of the model from its construction (``RunChoices.adapter``, ``model.adapters``), before the optimizer,
the checkpoint check of a resume and DDP see it, so every parameter is in the optimizer from the start. The
backbone changes as it trains, so no epoch runs on cached features. ``best.pt`` holds the plain timm weights
with the adapters merged in (``TransferModule.export_state_dict``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from transferlab.errors import ConfigError
from transferlab.model.adapters import LoraSpec
from transferlab.strategies.base import FreezePolicy


class Lora(FreezePolicy):
    """LoRA adapters of ``rank`` (scaled by ``alpha`` / ``rank``; ``alpha`` null: the rank) in ``target_modules``
    (null: the backbone family's default, ``model.adapters.DEFAULT_TARGETS``), ``dropout`` on their input; they
    train at ``optimizer.lr × backbone_lr_scale``, the head at ``optimizer.lr``."""

    name = "lora"

    def __init__(self, rank: int = 8, alpha: float | None = None, dropout: float = 0.0,
                 target_modules: Sequence[str] | None = None, backbone_lr_scale: float = 1.0) -> None:
        super().__init__(backbone_lr_scale=backbone_lr_scale)
        if int(rank) < 1:
            raise ConfigError(f"strategy.rank={rank} must be ≥ 1. Fix: strategy.rank=8")
        if alpha is not None and not float(alpha) > 0:
            raise ConfigError(f"strategy.alpha={alpha} must be > 0, or null for the rank. Fix: strategy.alpha=null")
        if not 0 <= float(dropout) < 1:
            raise ConfigError(f"strategy.dropout={dropout} must be in [0, 1). Fix: strategy.dropout=0.0")
        targets = None if target_modules is None else tuple(str(t) for t in target_modules)
        self.spec = LoraSpec(int(rank), None if alpha is None else float(alpha), float(dropout), targets)

    @property
    def adapter(self) -> LoraSpec:
        return self.spec

    def trainable_top_blocks(self, epoch: int, n_blocks: int) -> int:
        return 0  # no whole block trains

    def trainable_parameters(self, module: nn.Module, epoch: int) -> set[str]:
        """The head's parameters and the adapters' (``TransferModule.adapter_names``)."""
        return super().trainable_parameters(module, epoch) | set(module.adapter_names)
