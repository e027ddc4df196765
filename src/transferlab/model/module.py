"""The LightningModule: a timm backbone, a head, torchmetrics per split, parameter groups from timm."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pytorch_lightning as pl
import torch
import torchmetrics
from timm.data import Mixup
from timm.data.mixup import mixup_target
from torch import nn

from transferlab.config.schema import BackboneConfig, HeadConfig, OptimizerConfig
from transferlab.config.typed import parse
from transferlab.errors import ConfigError, TrainingDiverged
from transferlab.model.adapters import LoraSpec, add_lora, adapter_parameter_names, merged_copy
from transferlab.model.backbone import backbone_blocks, create_backbone, load_weights_file
from transferlab.model.heads import build_head
from transferlab.model.optim import build_optimizer, lr_schedule, param_groups

T = TypeVar("T")

#: the name of the LR curves: ``lr/<parameter group>`` (``model.optim.param_groups`` names the groups)
LR_CURVE = "lr"


@dataclass(frozen=True)
class RunChoices:
    """What a run decided for its model besides the config groups: the data's class count and input size,
    the weights as resolved (None, ``"hub"`` or a file), the freeze policy's LR options, whether every
    batch is pre-computed features (a linear probe on the feature cache: no mixup), mixup's options, and
    the adapters the policy adds to the backbone (``strategy=lora``: ``model.adapters``)."""

    num_classes: int
    input_size: int | None = None
    weights: str | None = None
    backbone_lr_scale: float = 1.0
    layer_decay: float | None = None
    input_is_features: bool = False
    mixup: dict[str, Any] | None = None
    adapter: LoraSpec | None = None


def _typed(cls: type[T], value: T | Mapping[str, Any] | None, key: str) -> T:
    """A typed config object, from itself, a mapping (a checkpoint's hyperparameters) or None (defaults)."""
    return value if isinstance(value, cls) else parse(cls, value, key)


class TransferModule(pl.LightningModule):
    """A timm backbone (by name) with a linear or MLP head.

    Built from the typed ``backbone``, ``head`` and ``optimizer`` config groups (``config.schema``) and the
    run's ``RunChoices``: a new option is a field of its group's dataclass (and its YAML default), read
    here, never copied. The hyperparameters saved in checkpoints and logged to W&B are those objects as
    plain dicts (checkpoints load with ``weights_only=True``), and the module can be rebuilt from them.
    Which backbone blocks train is decided by a freeze-policy callback (``transferlab.strategies``), which
    also gives the LR options of ``RunChoices``; every parameter is in the optimizer from the start
    (``transferlab.model.optim``). A 2-D batch holds pre-computed pooled backbone features and only the
    head runs on it. Speed: ``backbone.channels_last`` (CNNs, inputs too), ``compile`` (``torch.compile``
    of the backbone, not when every batch is features) and ``grad_checkpointing``; mixed precision is the
    Trainer's.
    """

    def __init__(
        self,
        backbone: BackboneConfig | Mapping[str, Any],
        choices: RunChoices | Mapping[str, Any],
        head: HeadConfig | Mapping[str, Any] | None = None,
        optimizer: OptimizerConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone_cfg = _typed(BackboneConfig, backbone, "backbone")
        self.choices = _typed(RunChoices, choices, "choices")
        self.head_cfg = _typed(HeadConfig, head, "head")
        self.optimizer_cfg = _typed(OptimizerConfig, optimizer, "optimizer")
        parts = {"backbone": self.backbone_cfg, "choices": self.choices, "head": self.head_cfg, "optimizer": self.optimizer_cfg}
        self.save_hyperparameters({name: dataclasses.asdict(part) for name, part in parts.items()})
        num_classes, smoothing = self.choices.num_classes, float(self.optimizer_cfg.label_smoothing)
        self.backbone = _build_backbone(self.backbone_cfg, self.choices, self.head_cfg.pool)
        head_cfg = self.head_cfg
        self.head = build_head(self.backbone.num_features, num_classes, head_cfg.hidden, head_cfg.dropout, head_cfg.activation)
        # after the adapters are in: timm's group_matcher puts each adapter in its layer's block
        self.blocks = [["backbone." + n for n in block] for block in backbone_blocks(self.backbone)]
        #: the adapters' parameter names (``backbone.…``), empty without adapters
        self.adapter_names = frozenset(adapter_parameter_names(self.backbone, "backbone."))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=smoothing)
        self.mixup = _mixup(self.choices.mixup, num_classes, smoothing) if not self.choices.input_is_features else None
        self.soft_criterion = nn.CrossEntropyLoss()  # soft (mixed) targets already carry the smoothing
        metrics = _metrics(num_classes)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    # ---- forward -------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features (timm ``num_classes=0`` forward)."""
        if self.backbone_cfg.channels_last and x.dim() == 4:
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
        rest = mixup_target(y[n:], self.choices.num_classes, 1.0, self.mixup.label_smoothing)
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
        opt, choices = self.optimizer_cfg, self.choices
        return param_groups(self, self.backbone, self.blocks, float(opt.lr), float(opt.weight_decay), choices.backbone_lr_scale,
                            choices.layer_decay)

    def configure_optimizers(self) -> dict[str, Any]:
        opt = self.optimizer_cfg
        optimizer = build_optimizer(opt.name, self.param_groups(), float(opt.lr), dict(opt.kwargs), self.trainer.precision)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, int(self.trainer.max_epochs or 1))
        warmup = int(round(float(opt.warmup_epochs) * total / epochs))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(opt.scheduler, total, warmup))
        # named: Lightning's LearningRateMonitor logs each parameter group as lr/<group> (lr/head, lr/backbone.3…)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": LR_CURVE}}

    def epoch_metric_names(self) -> list[str]:
        """The keys this module logs once per epoch (validation metrics, the epoch means of training ones)."""
        return ["train/loss_epoch", *self.train_metrics.keys(), "val/loss", *self.val_metrics.keys()]

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights as a model without adapters holds them: ``backbone.*`` a plain timm state dict (LoRA merged
        into its base layers) and ``head.*``; without adapters, ``state_dict()`` itself."""
        if self.choices.adapter is None:
            return self.state_dict()
        parts = {"backbone": merged_copy(self.backbone), "head": self.head}
        return {f"{name}.{k}": v for name, part in parts.items() for k, v in part.state_dict().items()}


def _build_backbone(cfg: BackboneConfig, choices: RunChoices, pool: str | None) -> nn.Module:
    """The headless timm backbone of the run (``pool``: the head's, timm's ``global_pool``), with its weights
    and speed settings."""
    backbone = create_backbone(
        cfg.name, in_chans=cfg.in_chans, input_size=choices.input_size, global_pool=pool,
        hub_weights=choices.weights == "hub", **cfg.kwargs,
    )
    if choices.weights not in (None, "hub"):
        load_weights_file(backbone, choices.weights)
    if choices.adapter is not None:  # into the loaded weights, before the speed settings (they cover the adapters)
        add_lora(backbone, choices.adapter, cfg.name)
    if cfg.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    if cfg.grad_checkpointing:
        try:
            backbone.set_grad_checkpointing(True)
        except (AttributeError, AssertionError, NotImplementedError) as err:
            raise ConfigError(
                f"backbone.grad_checkpointing=true: {cfg.name} does not support it ({err}); set it to false."
            ) from err
    if cfg.compile and not choices.input_is_features:  # on cached features the backbone runs once
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
