"""The LightningModule: a timm backbone, a head, torchmetrics per split, parameter groups from timm."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn

from transferlab.backbone import backbone_blocks, create_backbone, load_weights_file
from transferlab.errors import ConfigError, TrainingDiverged
from transferlab.heads import build_head

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}

#: optimizers whose fused (single-kernel) implementation is used unless ``optimizer.kwargs.fused=false``
FUSED_BY_DEFAULT = frozenset({"adam", "adamw"})


class TransferModule(pl.LightningModule):
    """A timm backbone (by name) with a linear or MLP head.

    Takes plain values and builds its own parts. Which backbone blocks train is decided by a
    freeze-policy callback (``transferlab.strategies``); every parameter is in the optimizer from the
    start, in one group per backbone block (LR = ``lr * backbone_lr_scale``, times
    ``layer_decay ** depth_from_top`` when layer decay is on) plus the head's group at ``lr``.
    A 2-D batch holds pre-computed pooled backbone features and only the head runs on it;
    ``input_is_features=True`` says every batch is one (a linear probe on the feature cache: no mixup).
    Speed: ``channels_last`` (CNNs, inputs too), ``compile`` (``torch.compile`` of the backbone) and
    ``grad_checkpointing`` (timm's ``set_grad_checkpointing``); mixed precision is the Trainer's.
    """

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
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer.name={optimizer!r} is unknown; choose one of {sorted(OPTIMIZERS)}.")
        if not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"optimizer.lr={lr} must be a positive number (e.g. 0.001).")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ConfigError(f"optimizer.weight_decay={weight_decay} must be ≥ 0 (e.g. 0.01, or 0 for none).")
        if scheduler not in ("cosine", "constant"):
            raise ConfigError(f"optimizer.scheduler={scheduler!r} is unknown; choose cosine or constant.")
        if not 0 < backbone_lr_scale <= 1e3:
            raise ConfigError(f"strategy.backbone_lr_scale={backbone_lr_scale} must be > 0 (e.g. 0.1).")
        if layer_decay is not None and not 0 < layer_decay <= 1:
            raise ConfigError(f"strategy.layer_decay={layer_decay} must be in (0, 1], or null to turn it off.")
        if num_classes < 2:
            raise ConfigError(f"dataset.num_classes={num_classes} must be at least 2.")
        self.backbone = create_backbone(
            backbone,
            in_chans=in_chans,
            input_size=input_size,
            global_pool=pool,
            hub_weights=weights == "hub",
            **(backbone_kwargs or {}),
        )
        if weights not in (None, "hub"):
            load_weights_file(self.backbone, weights)
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        if grad_checkpointing:
            try:
                self.backbone.set_grad_checkpointing(True)
            except (AttributeError, AssertionError, NotImplementedError) as err:
                raise ConfigError(
                    f"backbone.grad_checkpointing=true: {backbone} does not support it ({err}); set it to false."
                ) from err
        if compile:
            self.backbone.compile()  # in place: parameter names, checkpoints and freezing are unchanged
        self.head = build_head(
            self.backbone.num_features, num_classes, head_hidden, head_dropout, head_activation
        )
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
        from timm.data.mixup import mixup_target

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
        """All parameters, grouped: the head, then each backbone block (bottom to top).

        Each group is split into weight-decay and no-decay (biases, norms, tokens) halves.
        Layer decay uses timm's fine-grained ``group_matcher`` layers.
        """
        hp = self.hparams
        named = dict(self.named_parameters())
        skip = {"backbone." + n for n in getattr(self.backbone, "no_weight_decay", lambda: set())()}
        layers = (
            [["backbone." + n for n in b] for b in backbone_blocks(self.backbone, coarse=False)]
            if hp.layer_decay is not None
            else self.blocks
        )
        scaled: list[tuple[str, list[str], float]] = [("head", [n for n in named if n.startswith("head.")], 1.0)]
        for depth, names in enumerate(reversed(layers)):
            decay = hp.layer_decay ** depth if hp.layer_decay is not None else 1.0
            scaled.append((f"backbone.{len(layers) - 1 - depth}", names, hp.backbone_lr_scale * decay))
        groups: list[dict[str, Any]] = []
        for name, names, scale in scaled:
            no_decay = [n for n in names if named[n].ndim <= 1 or n in skip]
            decay = [n for n in names if n not in no_decay]
            for suffix, members, wd in (("", decay, hp.weight_decay), (".no_decay", no_decay, 0.0)):
                if members:
                    groups.append(
                        {
                            "name": name + suffix,
                            "params": [named[n] for n in members],
                            "lr": hp.lr * scale,
                            "lr_scale": scale,
                            "weight_decay": wd,
                        }
                    )
        covered = sum(len(g["params"]) for g in groups)
        assert covered == len(named), f"param groups cover {covered} of {len(named)} parameters"
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        kwargs = dict(hp.optimizer_kwargs or {})
        # not under 16-bit AMP (its GradScaler: Lightning forbids gradient clipping with fused optimizers)
        # nor when the config picked foreach
        if hp.optimizer in FUSED_BY_DEFAULT and "foreach" not in kwargs and not str(self.trainer.precision).startswith("16"):
            kwargs.setdefault("fused", True)  # one kernel for all tensors: about 2× faster steps on CPU than the loop
        optimizer = OPTIMIZERS[hp.optimizer](self.param_groups(), lr=hp.lr, **kwargs)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, int(self.trainer.max_epochs or 1))
        warmup = int(round(hp.warmup_epochs * total / epochs))
        schedule = _cosine(total, warmup) if hp.scheduler == "cosine" else _constant(warmup)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts of the parts that run in a step.

        With cached features only the head runs, so the backbone counts in ``total`` alone.
        """
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, total


def _mixup(options: dict[str, Any] | None, num_classes: int, label_smoothing: float) -> Any:
    """timm ``Mixup`` from ``dataset.mixup`` options, or None when they turn nothing on."""
    if not options:
        return None
    from timm.data import Mixup

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
    return torchmetrics.MetricCollection(metrics)


class _cosine:
    """Linear warm-up then cosine decay to zero (picklable, so checkpoints can hold it)."""

    def __init__(self, total: int, warmup: int) -> None:
        self.total, self.warmup = total, warmup

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class _constant:
    def __init__(self, warmup: int) -> None:
        self.warmup = warmup

    def __call__(self, step: int) -> float:
        return (step + 1) / self.warmup if step < self.warmup else 1.0
