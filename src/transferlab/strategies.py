"""Transfer strategies as freeze policies: Lightning callbacks separate from the model.

Each policy answers one question, ``trainable_top_blocks(epoch, n_blocks)``: how many of the
backbone's blocks (timm ``group_matcher`` stages, counted from the top) train at ``epoch``.
The head always trains. Frozen blocks get ``requires_grad=False`` and their modules are kept in
eval mode (BatchNorm statistics do not move). The optimizer holds every parameter from the start,
so nothing is added mid-training; the policy's state is saved in checkpoints and restored on resume.

Under DDP (world size > 1) a policy whose schedule changes over epochs (``static = False``: gradual,
lp_ft) runs in *mask mode*: torch DDP only all-reduces parameters that required grad when it wrapped
the model, so every parameter keeps ``requires_grad=True`` from the start and the schedule-frozen ones
get ``grad = None`` before each optimizer step (no update, no weight decay, no optimizer state).
Static policies keep ``requires_grad=False``: DDP never sees their frozen parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytorch_lightning as pl
from torch import nn

from transferlab.errors import ConfigError

#: strategy config keys that configure the optimizer or data, not the freeze policy
COMMON_KEYS = frozenset({"name", "backbone_lr_scale", "layer_decay", "cache_features"})


class FreezePolicy(pl.Callback):
    """Base policy. Subclasses set ``name``, ``pretrained`` and ``trainable_top_blocks``."""

    name: ClassVar[str]
    pretrained: ClassVar[bool] = True
    #: whether the backbone is frozen for the whole run (so its features can be cached)
    frozen_backbone: ClassVar[bool] = False
    #: whether what trains stays the same for the whole run (False: the schedule changes over epochs)
    static: ClassVar[bool] = True

    def __init__(self) -> None:
        self.n_trainable_blocks: int | None = None
        #: names of the parameters that train now (the head's and the unfrozen blocks')
        self.trainable: set[str] = set()
        #: DDP with a changing schedule: all parameters require grad, frozen ones are masked (see module doc)
        self.mask_mode = False
        self._frozen_modules: list[nn.Module] = []

    def trainable_top_blocks(self, epoch: int, n_blocks: int) -> int:
        raise NotImplementedError

    def validate(self, n_blocks: int) -> None:
        """Raise ConfigError when the policy does not fit a backbone of ``n_blocks`` blocks."""

    def head_only_epochs(self, n_blocks: int, max_epochs: int) -> int:
        """How many leading epochs (of ``max_epochs``) train the head alone, the whole backbone frozen.

        Those epochs can train on cached backbone features (linear_probe: all of them; lp_ft: its
        ``lp_epochs``; gradual: the epochs before its first milestone).
        """
        epoch = 0
        while epoch < max_epochs and self.trainable_top_blocks(epoch, n_blocks) == 0:
            epoch += 1
        return epoch

    # ---- applying --------------------------------------------------------------------------------
    def apply(self, module: pl.LightningModule, epoch: int) -> None:
        """Set ``requires_grad`` and module modes for ``epoch``."""
        blocks: list[list[str]] = module.blocks
        k = min(len(blocks), max(0, self.trainable_top_blocks(epoch, len(blocks))))
        top = {name for block in blocks[len(blocks) - k :] for name in block}
        self.trainable = {name for name, _ in module.named_parameters() if not name.startswith("backbone.") or name in top}
        for name, param in module.named_parameters():
            param.requires_grad_(self.mask_mode or name in self.trainable)
        self.n_trainable_blocks = k
        self._frozen_modules = _maximal_frozen_modules(module.backbone, "backbone", self.trainable)
        if module.training:
            self.set_frozen_eval()

    def parameter_counts(self, module: nn.Module) -> tuple[int, int]:
        """(trainable, total) parameters as the policy decides (not ``requires_grad``: see mask mode)."""
        if not self.trainable:
            return sum(p.numel() for p in module.parameters() if p.requires_grad), sum(p.numel() for p in module.parameters())
        named = dict(module.named_parameters())
        return sum(p.numel() for n, p in named.items() if n in self.trainable), sum(p.numel() for p in named.values())

    def set_frozen_eval(self) -> None:
        """Put every fully frozen backbone module in eval mode (BatchNorm stats and dropout fixed).

        Runs before every batch; ``eval()`` walks the whole sub-tree, so a module whose own flag already
        says eval is skipped (Lightning's ``train()`` after validation sets the flags of whole trees).
        """
        for frozen in self._frozen_modules:
            if frozen.training:
                frozen.eval()

    # ---- Lightning hooks ---------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.validate(len(pl_module.blocks))
            self.mask_mode = trainer.world_size > 1 and not self.static
            # before the optimizer and DDP are set up, so both see the frozen state of epoch 0
            self.apply(pl_module, epoch=0)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the restored epoch after a resume (Lightning restores its loops after on_fit_start), so the
        # counts logged at the start of a resumed run are the resumed epoch's
        self.apply(pl_module, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        before = self.n_trainable_blocks
        self.apply(pl_module, trainer.current_epoch)
        if before is not None and before != self.n_trainable_blocks:
            trainable, _ = self.parameter_counts(pl_module)
            pl_module.print(
                f"[{self.name}] epoch {trainer.current_epoch}: {self.n_trainable_blocks} of "
                f"{len(pl_module.blocks)} backbone blocks train ({trainable:,} trainable parameters)"
            )

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        # Lightning puts the whole model back in train mode after each validation: undo it for frozen parts.
        self.set_frozen_eval()

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if self.mask_mode:  # schedule-frozen parameters: no update, no weight decay, no optimizer state
            for name, param in pl_module.named_parameters():
                if name not in self.trainable:
                    param.grad = None

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n_trainable_blocks": self.n_trainable_blocks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("name") not in (None, self.name):
            raise ConfigError(
                f"the checkpoint was written by strategy {state_dict['name']!r}, this run uses {self.name!r}. "
                "Fix: resume with the same strategy, or start in a fresh output folder."
            )
        self.n_trainable_blocks = state_dict.get("n_trainable_blocks")


def _maximal_frozen_modules(root: nn.Module, prefix: str, trainable: set[str]) -> list[nn.Module]:
    """The largest sub-modules of ``root`` (named ``prefix``) that hold parameters, none of them in ``trainable``."""
    found: list[nn.Module] = []

    def visit(module: nn.Module, name: str) -> None:
        params = [f"{name}.{n}" for n, _ in module.named_parameters()]
        if params and not any(p in trainable for p in params):
            found.append(module)
            return
        for child_name, child in module.named_children():
            visit(child, f"{name}.{child_name}")

    visit(root, prefix)
    return found


class Scratch(FreezePolicy):
    """Random initialisation; everything trains."""

    name = "scratch"
    pretrained = False

    def trainable_top_blocks(self, epoch: int, n_blocks: int) -> int:
        return n_blocks


class LinearProbe(FreezePolicy):
    """Feature extraction: the backbone is frozen and in eval mode; only the head trains."""

    name = "linear_probe"
    frozen_backbone = True

    def trainable_top_blocks(self, epoch: int, n_blocks: int) -> int:
        return 0


class Finetune(FreezePolicy):
    """All blocks (``unfreeze_top_k=None``) or the top k train, the backbone at a scaled-down LR."""

    name = "finetune"

    def __init__(self, unfreeze_top_k: int | None = None) -> None:
        super().__init__()
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

    def __init__(self, milestones: Sequence[int] = (1, 2, 3, 4), blocks_per_milestone: int = 1) -> None:
        super().__init__()
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


class LpFt(FreezePolicy):
    """LP-FT: ``lp_epochs`` of linear probing, then every block fine-tunes at the backbone's low LR."""

    name = "lp_ft"
    static = False

    def __init__(self, lp_epochs: int = 3) -> None:
        super().__init__()
        self.lp_epochs = int(lp_epochs)

    def validate(self, n_blocks: int) -> None:
        if self.lp_epochs < 1:
            raise ConfigError(f"strategy.lp_epochs={self.lp_epochs} must be ≥ 1 (use strategy=finetune for 0).")

    def trainable_top_blocks(self, epoch: int, n_blocks: int) -> int:
        return 0 if epoch < self.lp_epochs else n_blocks


POLICIES: dict[str, type[FreezePolicy]] = {
    cls.name: cls for cls in (Scratch, LinearProbe, Finetune, Gradual, LpFt)
}


def build_policy(strategy: Mapping[str, Any]) -> FreezePolicy:
    """The freeze policy for a ``strategy`` config (its ``name`` plus the policy's own arguments)."""
    name = strategy.get("name")
    if name not in POLICIES:
        raise ConfigError(f"strategy={name!r} is unknown; choose one of {sorted(POLICIES)}.")
    kwargs = {k: v for k, v in strategy.items() if k not in COMMON_KEYS}
    try:
        return POLICIES[name](**kwargs)
    except TypeError as err:
        raise ConfigError(f"strategy={name}: {err}. Remove or rename the unknown strategy.* key.") from err
