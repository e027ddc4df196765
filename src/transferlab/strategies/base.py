"""The freeze policy: a Lightning callback, separate from the model, that decides what trains at each epoch.

A policy answers ``trainable_parameters(module, epoch)``; the default counts backbone blocks (timm
``group_matcher`` stages) from the top with ``trainable_top_blocks(epoch, n_blocks)``. The head always
trains. Frozen blocks get ``requires_grad=False`` and their modules are kept in eval mode (BatchNorm
statistics do not move). The optimizer holds every parameter from the start, so nothing is added
mid-training; the policy's state is saved in checkpoints and restored on resume.

A policy also owns its optimisation options: the backbone's LR scale, layer-wise LR decay, whether its
head-only epochs train on cached backbone features, and its parameter counts (logged every epoch).

Under DDP (world size > 1) a policy whose schedule changes over epochs (``static = False``: gradual,
lp_ft) runs in *mask mode*: torch DDP only all-reduces parameters that required grad when it wrapped
the model, so every parameter keeps ``requires_grad=True`` from the start and the schedule-frozen ones
get ``grad = None`` before each optimizer step (no update, no weight decay, no optimizer state).
Static policies keep ``requires_grad=False``: DDP never sees their frozen parameters.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytorch_lightning as pl
from torch import nn

from transferlab.errors import ConfigError
from transferlab.model.adapters import LoraSpec

#: what a policy logs at the start of every epoch: trainable and total parameters, trainable backbone blocks
PARAMETER_CURVES: tuple[str, ...] = ("params/trainable", "params/total", "params/trainable_blocks")


def requires_grad_counts(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters of ``module`` by ``requires_grad`` (a policy's own counts see mask mode)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad), sum(p.numel() for p in module.parameters())


class FreezePolicy(pl.Callback):
    """Base policy. Subclasses set ``name`` and ``trainable_top_blocks`` (or ``trainable_parameters``).

    ``backbone_lr_scale``: the backbone's LR as a multiple of the head's. ``layer_decay``: each layer
    below the top gets another ×``layer_decay`` (None: off). ``cache_features``: the epochs that train
    the head alone run on pre-computed backbone features.
    """

    name: ClassVar[str]
    pretrained: ClassVar[bool] = True
    #: whether the backbone is frozen for the whole run (so its features can be cached)
    frozen_backbone: ClassVar[bool] = False
    #: whether what trains stays the same for the whole run (False: the schedule changes over epochs)
    static: ClassVar[bool] = True

    def __init__(self, backbone_lr_scale: float = 1.0, layer_decay: float | None = None, cache_features: bool = False) -> None:
        if not 0 < float(backbone_lr_scale) <= 1e3:
            raise ConfigError(f"strategy.backbone_lr_scale={backbone_lr_scale} must be > 0 (e.g. 0.1).")
        if layer_decay is not None and not 0 < float(layer_decay) <= 1:
            raise ConfigError(f"strategy.layer_decay={layer_decay} must be in (0, 1], or null to turn it off.")
        self.backbone_lr_scale = float(backbone_lr_scale)
        self.layer_decay = None if layer_decay is None else float(layer_decay)
        self.cache_features = bool(cache_features)
        self.n_trainable_blocks: int | None = None
        #: names of the parameters that train now (the head's and the unfrozen backbone's)
        self.trainable: set[str] = set()
        #: DDP with a changing schedule: all parameters require grad, frozen ones are masked (see module doc)
        self.mask_mode = False
        #: (trainable, total) parameter counts when training started
        self.counts_at_start: tuple[int, int] | None = None
        self._frozen_modules: list[nn.Module] = []
        self._frozen_for: tuple[int, frozenset[str]] | None = None

    # ---- what trains -----------------------------------------------------------------------------
    def trainable_top_blocks(self, epoch: int, n_blocks: int) -> int:
        raise NotImplementedError

    def trainable_parameters(self, module: nn.Module, epoch: int) -> set[str]:
        """Names of the parameters that train at ``epoch``: the head's and those of the top blocks."""
        blocks: list[list[str]] = module.blocks
        top = {name for block in blocks[len(blocks) - self.top_blocks(epoch, len(blocks)) :] for name in block}
        return {name for name, _ in module.named_parameters() if not name.startswith("backbone.") or name in top}

    def top_blocks(self, epoch: int, n_blocks: int) -> int:
        """``trainable_top_blocks`` clipped to the backbone's ``n_blocks``."""
        return min(n_blocks, max(0, self.trainable_top_blocks(epoch, n_blocks)))

    def validate(self, n_blocks: int) -> None:
        """Raise ConfigError when the policy does not fit a backbone of ``n_blocks`` blocks."""

    def schedule_shortfall(self, epochs: int) -> tuple[str, int, str | None] | None:
        """What a run of ``epochs`` epochs loses of this policy's schedule, or None when nothing:
        (what goes wrong, the epochs the schedule needs, another fix than more epochs or None)."""
        return None

    @property
    def adapter(self) -> LoraSpec | None:
        """The adapters the policy adds to the backbone before anything trains (None: none; ``strategy=lora``)."""
        return None

    @property
    def features_only(self) -> bool:
        """Whether every epoch trains on cached features (the backbone frozen throughout, caching on)."""
        return self.cache_features and self.frozen_backbone

    def head_only_epochs(self, module: nn.Module, max_epochs: int) -> int:
        """How many leading epochs (of ``max_epochs``) train the head alone, the whole backbone frozen."""
        epoch = 0
        while epoch < max_epochs and not any(n.startswith("backbone.") for n in self.trainable_parameters(module, epoch)):
            epoch += 1
        return epoch

    def cached_feature_epochs(self, module: nn.Module, max_epochs: int) -> int:
        """The leading epochs that train on cached features (linear_probe: all; lp_ft: its ``lp_epochs``;
        gradual: those before its first milestone), 0 without ``cache_features``."""
        if not self.cache_features:
            return 0
        return max_epochs if self.frozen_backbone else self.head_only_epochs(module, max_epochs)

    # ---- applying --------------------------------------------------------------------------------
    def apply(self, module: pl.LightningModule, epoch: int) -> None:
        """Set ``requires_grad`` and module modes for ``epoch``."""
        trainable = self.trainable_parameters(module, epoch)
        for name, param in module.named_parameters():
            param.requires_grad_(self.mask_mode or name in trainable)
        self.n_trainable_blocks = self.top_blocks(epoch, len(module.blocks))
        key = (id(module.backbone), frozenset(trainable))
        if key != self._frozen_for:  # the module walk is O(modules²): redo it only when what trains changes
            self._frozen_modules, self._frozen_for = _maximal_frozen_modules(module.backbone, "backbone", trainable), key
        self.trainable = trainable
        if module.training:
            self.set_frozen_eval()

    def settle_solved(self, module: pl.LightningModule) -> None:
        """A run whose head was solved and that trains nothing more: what it trained (the first epoch's
        freezing: the head) and its parameter counts, as ``setup`` and ``on_train_epoch_start`` would leave them."""
        self.apply(module, epoch=0)
        self.counts_at_start = self.parameter_counts(module)

    def parameter_counts(self, module: nn.Module) -> tuple[int, int]:
        """(trainable, total) parameters as the policy decides (not ``requires_grad``: see mask mode)."""
        if not self.trainable:
            return requires_grad_counts(module)
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
        # counts at the start of a resumed run are the resumed epoch's
        self.apply(pl_module, trainer.current_epoch)
        self.counts_at_start = self.parameter_counts(pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        before = self.n_trainable_blocks
        self.apply(pl_module, trainer.current_epoch)
        trainable, total = self.parameter_counts(pl_module)
        if before is not None and before != self.n_trainable_blocks:
            pl_module.print(
                f"[{self.name}] epoch {trainer.current_epoch}: {self.n_trainable_blocks} of "
                f"{len(pl_module.blocks)} backbone blocks train ({trainable:,} trainable parameters)"
            )
        counts = dict(zip(PARAMETER_CURVES, (trainable, total, self.n_trainable_blocks)))
        for logger in trainer.loggers:  # a curve per epoch: gradual's unfreezing shows
            logger.log_metrics({**counts, "epoch": trainer.current_epoch}, step=trainer.global_step)

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
