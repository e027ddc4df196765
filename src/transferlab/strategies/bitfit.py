"""BitFit (Ben Zaken et al., 2022): the head and every bias of the backbone train, all other weights stay.

The worked example of adding a strategy (docs/strategies.md, "Add a strategy"): this class plus
``conf/strategy/bitfit.yaml``; the registry finds every FreezePolicy subclass in this package.
"""

from __future__ import annotations

from torch import nn

from transferlab.strategies.base import FreezePolicy


class BitFit(FreezePolicy):
    """Biases and the head train; the backbone's other weights are frozen."""

    name = "bitfit"

    def trainable_top_blocks(self, epoch: int, n_blocks: int) -> int:
        return 0  # no whole block trains

    def trainable_parameters(self, module: nn.Module, epoch: int) -> set[str]:
        biases = {name for name, _ in module.named_parameters() if name.endswith(".bias")}
        return super().trainable_parameters(module, epoch) | biases
