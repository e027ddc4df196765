"""The LightningModule: a timm backbone, a head, torchmetrics per split, parameter groups from timm."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics
from timm.data import Mixup
from timm.data.mixup import mixup_target
from torch import nn

from transferlab.errors import ConfigError, TrainingDiverged
from transferlab.model.backbone import backbone_blocks, create_backbone, load_weights_file
from transferlab.model.heads import build_head
from transferlab.model.optim import build_optimizer, check_optimizer, lr_schedule, param_groups


class TransferModule(pl.LightningModule):
    """A timm backbone (by name) with a linear or MLP head.

    Takes plain values and builds its own parts. Which backbone blocks train is decided by a
    freeze-policy callback (``transferlab.strategies``), which also gives ``backbone_lr_scale`` and
    ``layer_decay``; every parameter is in the optimizer from the start (``transferlab.model.optim``).
    A 2-D batch holds pre-computed pooled backbone features and only the head runs on it;
    ``input_is_features=True`` says every batch is one (a linear probe on the feature cache: no mixup).
    Speed: ``channels_last`` (CNNs, inputs too), ``compile`` (``torch.compile`` of the backbone) and
    ``grad_checkpointing`` (timm's ``set_grad_checkpointing``); mixed precision is the Trainer's.
    """

    # a flat argument table (saved as the checkpoint's and W&B's hyperparameters), not logic
    def __init__(
        self,
        backbone: str,
        num_classes: int,
        in_chans: int = 3,
        input_size: int | None = None,
        pool: str | None = None,
        weights: str | None = None,
        head_hidden: Sequence[int] = (),
        head_dropout: float = 0.0,
        head_activation: str = "relu",
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer_kwargs: dict[str, Any] | None = None,
        backbone_lr_scale: float = 1.0,
        layer_decay: float | None = None,
        scheduler: str = "cosine",
        warmup_epochs: float = 0.0,
        label_smoothing: float = 0.0,
        input_is_features: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        grad_checkpointing: bool = False,
        backbone_kwargs: dict[str, Any] | None = None,
        mixup: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_optimizer(optimizer, lr, weight_decay, scheduler)
        if num_classes < 2:
            raise ConfigError(f"dataset.num_classes={num_classes} must be at least 2.")
        self.backbone = _build_backbone(self.hparams)
        self.head = build_head(self.backbone.num_features, num_classes, head_hidden, head_dropout, head_activation)
        self.blocks = [["backbone." + n for n in block] for block in backbone_blocks(self.backbone)]
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.mixup = _mixup(mixup, num_classes, label_smoothing) if not input_is_features else None
        self.soft_criterion = nn.CrossEntropyLoss()  # soft (mixed) targets already carry the smoothing
        metrics = _metrics(num_classes)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    # ---- forward -------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features (timm ``num_classes=0`` forward)."""
        if self.hparams.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images (N, C, H, W), or of pre-computed pooled features (N, num_features)."""
        if x.dim() == 2:
            return self.head(x)
        return self.head(self.features(x))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if split == "train" and self.mixup is not None and x.dim() == 4:  # never on cached features
            x, soft = self._mix(x, y)
            logits = self(x)
            loss = self.soft_criterion(logits, soft)
            y = soft.argmax(dim=1)  # training metrics count the dominant class of each mixed example
        else:
            logits = self(x)
            loss = self.criterion(logits, y)
        metrics = {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}[split]
        metrics.update(logits.detach(), y)
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(y))
        if batch_idx == 0:
            # Lightning computes and resets logged Metric objects at the epoch's end: registering them once
            # per epoch is enough, and logging them every step cost ~3 ms a step on CPU
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=split != "train")
        return loss

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """timm Mixup / CutMix on the batch: mixed images and soft targets.

        timm mixes pairs, so an odd last example stays unmixed (with a smoothed one-hot target).
        """
        assert self.mixup is not None
        n = len(x) - len(x) % 2
        rest = mixup_target(y[n:], self.hparams.num_classes, 1.0, self.mixup.label_smoothing)
        if n == 0:
            return x, rest
        mixed, soft = self.mixup(x[:n].clone(), y[:n])
        return torch.cat([mixed, x[n:]]), torch.cat([soft, rest])

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train", batch_idx)
        # on an accelerator the check syncs host and device; every few steps is enough (NaN persists)
        if loss.device.type != "cpu" and batch_idx % 16 != 0:
            return loss
        finite = bool(torch.isfinite(loss.detach()))
        if self.trainer.world_size > 1:  # every rank stops together (one rank alone would hang the others)
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            value = loss.item()
            where = f"is {value}" if not math.isfinite(value) else "is NaN or infinite on another DDP rank"
            raise TrainingDiverged(
                f"training loss {where} at epoch {self.current_epoch}, step {self.global_step}. "
                "Fix: lower optimizer.lr, use trainer.precision=32-true, or set trainer.gradient_clip_val."
            )
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val", batch_idx)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test", batch_idx)

    # ---- parameters ----------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """All parameters, grouped: the head, then each backbone block (see ``transferlab.model.optim``)."""
        hp = self.hparams
        return param_groups(self, self.backbone, self.blocks, hp.lr, hp.weight_decay, hp.backbone_lr_scale, hp.layer_decay)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = build_optimizer(hp.optimizer, self.param_groups(), hp.lr, hp.optimizer_kwargs, self.trainer.precision)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, int(self.trainer.max_epochs or 1))
        warmup = int(round(hp.warmup_epochs * total / epochs))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(hp.scheduler, total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts by ``requires_grad`` (the policy's own counts see mask mode)."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, total


def _build_backbone(hp: Any) -> nn.Module:
    """The headless timm backbone of the module's hyperparameters, with its weights and speed settings."""
    backbone = create_backbone(
        hp.backbone, in_chans=hp.in_chans, input_size=hp.input_size, global_pool=hp.pool, hub_weights=hp.weights == "hub",
        **(hp.backbone_kwargs or {}),
    )
    if hp.weights not in (None, "hub"):
        load_weights_file(backbone, hp.weights)
    if hp.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    if hp.grad_checkpointing:
        try:
            backbone.set_grad_checkpointing(True)
        except (AttributeError, AssertionError, NotImplementedError) as err:
            raise ConfigError(
                f"backbone.grad_checkpointing=true: {hp.backbone} does not support it ({err}); set it to false."
            ) from err
    if hp.compile:
        backbone.compile()  # in place: parameter names, checkpoints and freezing are unchanged
    return backbone


def _mixup(options: dict[str, Any] | None, num_classes: int, label_smoothing: float) -> Any:
    """timm ``Mixup`` from ``dataset.mixup`` options, or None when they turn nothing on."""
    if not options:
        return None
    opts = {"mixup_alpha": 0.0, "label_smoothing": label_smoothing, **options, "num_classes": num_classes}
    if float(opts.get("mixup_alpha") or 0) <= 0 and float(opts.get("cutmix_alpha") or 0) <= 0 and opts.get("cutmix_minmax") is None:
        return None
    try:
        return Mixup(**opts)
    except (TypeError, AssertionError, ValueError) as err:
        raise ConfigError(
            f"dataset.mixup={options}: timm Mixup rejects it ({type(err).__name__}: {err}). Options: mixup_alpha, "
            "cutmix_alpha, cutmix_minmax, prob, switch_prob, mode (batch|pair|elem), label_smoothing."
        ) from err


def _metrics(num_classes: int) -> torchmetrics.MetricCollection:
    metrics: dict[str, torchmetrics.Metric] = {
        "acc": torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": torchmetrics.classification.MulticlassF1Score(num_classes, average="macro"),
    }
    if num_classes > 5:
        metrics["acc_top5"] = torchmetrics.classification.MulticlassAccuracy(num_classes, top_k=5, average="micro")
    # no compute groups: torchmetrics merges metrics whose states are equal after the first update, and after an
    # all-correct first batch (common from a solved probe's head) it merged f1_macro with acc_top5, reporting
    # 0.75 for an F1 of 0.58; under DDP ranks that merged differently deadlocked in the epoch-end sync (lp_ft)
    return torchmetrics.MetricCollection(metrics, compute_groups=False)
