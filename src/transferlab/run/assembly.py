"""Run assembly: a config (and resolved weights) → the policy, the data and the model of one run.

``plan_run`` makes the cheap checks (strategy, backbone name, dataset, the training subset) before
anything slow; ``assemble`` then builds the model and the data modules, with cached backbone features
for the epochs the policy trains its head alone. It never trains anything: the source weights are
resolved before (``transferlab.run.source``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import timm
from omegaconf import DictConfig

from transferlab.data.loaders import ImageDataModule, SplitsDataModule, loader_settings
from transferlab.data.registry import load_splits
from transferlab.data.splits import DatasetSplits, subsample, subset_seed, train_selection
from transferlab.data.transforms import build_transform
from transferlab.config.plain import plain
from transferlab.config.schema import RunConfig, check_config
from transferlab.features.cache import cached_features, state_digest
from transferlab.features.datamodules import StagedDataModule, TensorDataModule
from transferlab.identity import resolved, without_neutral_keys
from transferlab.model.adapters import LoraSpec, target_names
from transferlab.model.backbone import create_backbone, data_config
from transferlab.model.module import RunChoices, TransferModule
from transferlab.redaction import redact
from transferlab.run.context import cache_dir
from transferlab.run.probing import resolve_solver
from transferlab.run.checks import check_machine, warn_schedule
from transferlab.run.budget import budget_steps, epoch_passes, planned_epochs
from transferlab.run.trainer import autocast_dtype, device_of
from transferlab.strategies.base import FreezePolicy
from transferlab.strategies.registry import build_policy

#: dataset keys that choose the training subset or how files are read, not what the backbone computes
#: from them: left out of the feature-cache key (besides the result-neutral keys), so one extraction
#: serves every fraction, seed and batch size of a sweep
TRAINING_ONLY_DATASET_KEYS = (
    "fraction", "per_class", "subset_seed", "batch_size", "augment", "mixup", "on_bad_file", "verify", "download", "preload")


@dataclass
class RunPlan:
    """What the cheap checks produced: the policy, the dataset's splits and the run's training subset."""

    policy: FreezePolicy
    splits: DatasetSplits
    train_indices: np.ndarray
    dataset_cfg: dict[str, Any]
    config: RunConfig
    subset_seed: int  # the seed that drew train_indices (dataset.subset_seed, or the run's seed)


@dataclass
class Run:
    """Everything one run trains and evaluates, built from a config."""

    module: TransferModule
    datamodule: SplitsDataModule | StagedDataModule
    policy: FreezePolicy
    weights: str | None
    n_train: int
    selection: dict[str, Any] | None = None  # the exact training examples (train_indices.json)
    features_cached: bool = False  # whether some epochs train (or the head is solved) on cached features
    feature_cache_hit: bool = False
    feature_time_s: float = 0.0
    features: dict[str, Any] | None = None  # the cached features of every split (what the solver reads)
    train_indices: np.ndarray | None = None

    @property
    def staged(self) -> bool:
        """Whether the data switches from cached features to images between epochs."""
        return isinstance(self.datamodule, StagedDataModule)

    @property
    def solves_head(self) -> bool:
        """Whether the head is solved by L-BFGS on the cached features (``strategy.solver``)."""
        return bool(getattr(self.policy, "solves_head", False))

    @property
    def solved_epochs(self) -> int:
        """Leading epochs of the budget the solve replaced (lp_ft's probing epochs): the Trainer runs the rest."""
        return int(getattr(self.policy, "solved_epochs", 0))


def plan_run(cfg: DictConfig) -> RunPlan:
    """The cheap checks, before anything slow: the typed config, strategy, machine, dataset, subset, budget."""
    config = check_config(cfg)
    policy = build_policy(plain(cfg.strategy))
    resolve_solver(cfg, policy)
    check_machine(cfg, fits=not (policy.features_only and policy.solves_head))
    dataset_cfg = plain(cfg.dataset)
    splits = load_splits(dataset_cfg)
    dataset = config.dataset
    drawn_by = subset_seed(dataset_cfg, config.seed)  # val and test stay fixed by dataset.split_seed
    train_indices = subsample(splits.train.labels, dataset.fraction, dataset.per_class, drawn_by, splits.class_names)
    budget_steps(cfg.get("budget"), len(train_indices))  # a bad budget fails here, before the model is built
    check_adapter(config, policy.adapter)
    warn_schedule(cfg, policy, len(train_indices))
    return RunPlan(policy, splits, train_indices, dataset_cfg, config, drawn_by)


def check_adapter(config: RunConfig, spec: LoraSpec | None) -> None:
    """The adapters' target modules checked against the backbone's modules (randomly initialised: about 0.1 s for
    a resnet18), before the source weights train."""
    if spec is not None:
        backbone = config.backbone
        model = create_backbone(backbone.name, in_chans=backbone.in_chans, input_size=config.dataset.input_size,
                                global_pool=config.head.pool, **backbone.kwargs)
        target_names(model, spec.target_modules, backbone.name)


def augmentation(cfg: DictConfig, policy: FreezePolicy) -> tuple[dict[str, Any], dict[str, Any]]:
    """``dataset.augment`` and ``dataset.mixup``, or nothing (with a warning) when every epoch is cached."""
    augment, mixup = plain(cfg.dataset.get("augment")), plain(cfg.dataset.get("mixup"))
    if policy.features_only and (augment or mixup):
        warnings.warn(
            f"dataset.augment / dataset.mixup are ignored: strategy {cfg.strategy.name} trains on cached features, "
            "computed once without augmentation. Set strategy.cache_features=false to augment.",
            stacklevel=2,
        )
        return {}, {}
    return augment, mixup


def build_module(cfg: DictConfig, plan: RunPlan, weights: str | None, mixup: dict[str, Any]) -> TransferModule:
    """The LightningModule of the run (seeded first, so the head's initialisation is the seed's): the typed
    backbone, head and optimizer groups, and what the data, the weights and the policy decided."""
    policy, config = plan.policy, plan.config
    pl.seed_everything(config.seed, workers=True, verbose=False)
    choices = RunChoices(
        num_classes=len(plan.splits.class_names),  # = dataset.num_classes, checked by load_splits (null: from the data)
        input_size=config.dataset.input_size,
        weights=weights,
        backbone_lr_scale=policy.backbone_lr_scale,
        layer_decay=policy.layer_decay,
        input_is_features=policy.features_only,
        mixup=mixup or None,
        adapter=policy.adapter,
    )
    return TransferModule(config.backbone, choices, head=config.head, optimizer=config.optimizer)


def _loader_options(cfg: DictConfig, plan: RunPlan, decode_on_the_fly: bool) -> dict[str, Any]:
    """Batch size, seed, passes per epoch and DataLoader settings for this machine."""
    workers = {k: cfg.dataset.get(k, "auto") for k in ("num_workers", "pin_memory", "persistent_workers")}
    cuda = device_of(cfg).type == "cuda"
    settings = loader_settings(**workers, decode_on_the_fly=decode_on_the_fly, cuda=cuda)
    passes = epoch_passes(cfg, len(plan.train_indices))
    return dict(batch_size=int(cfg.dataset.batch_size), seed=int(cfg.seed), passes=passes, **settings)


def image_datamodule(cfg: DictConfig, plan: RunPlan, preprocess: dict[str, Any], augment: dict[str, Any]) -> ImageDataModule:
    """Images through the backbone's own preprocessing (``preprocess``: its timm data config), augmented for
    training if asked."""
    in_chans = int(cfg.backbone.in_chans)
    eval_tf = build_transform(preprocess, in_chans, training=False)
    train_tf = build_transform(preprocess, in_chans, training=True, **augment) if augment else eval_tf
    preload = bool(cfg.dataset.get("preload", True))
    options = _loader_options(cfg, plan, decode_on_the_fly=not preload or bool(augment))
    return ImageDataModule(plan.splits, train_tf, eval_tf, plan.train_indices, preload=preload, **options)


def staged_epochs(cfg: DictConfig, plan: RunPlan, module: TransferModule, augment: dict[str, Any], mixup: dict[str, Any]) -> int:
    """How many leading epochs of a policy that later unfreezes (lp_ft, gradual) train on cached features."""
    if plan.policy.features_only:
        return 0
    epochs = plan.policy.cached_feature_epochs(module, planned_epochs(cfg, len(plan.train_indices)))
    if epochs and (augment or mixup):
        warnings.warn(
            f"strategy {cfg.strategy.name}: its first {epochs} epoch(s) train the head on cached features, "
            "without dataset.augment / dataset.mixup (they apply from then on). "
            "Set strategy.cache_features=false to augment those epochs too.",
            stacklevel=2,
        )
    return epochs


def assemble(cfg: DictConfig, plan: RunPlan, weights: str | None) -> Run:
    """Build the run's model and data (``weights``: None, ``"hub"`` or a file, see ``run.source``)."""
    augment, mixup = augmentation(cfg, plan.policy)
    module = build_module(cfg, plan, weights, mixup)
    preprocess = data_config(module.backbone, cfg.dataset.get("input_size"), cfg.dataset.get("crop_pct"))
    images = image_datamodule(cfg, plan, preprocess, augment)
    staged = staged_epochs(cfg, plan, module, augment, mixup)
    run = Run(module, images, plan.policy, weights, n_train=len(plan.train_indices), train_indices=plan.train_indices,
              selection=train_selection(plan.splits, plan.train_indices, plan.dataset_cfg, plan.subset_seed))
    run.features_cached = plan.policy.features_only or staged > 0 or run.solves_head
    if run.features_cached:
        start = time.perf_counter()
        run.features, run.feature_cache_hit = _features(cfg, plan, module, images, preprocess, run.selection)
        cached = TensorDataModule(run.features, plan.train_indices, **_loader_options(cfg, plan, decode_on_the_fly=False))
        if plan.policy.features_only:
            run.datamodule = cached
        elif staged:
            run.datamodule = StagedDataModule(cached, images, staged)
        run.feature_time_s = time.perf_counter() - start
    return run


def _features(
    cfg: DictConfig, plan: RunPlan, module: TransferModule, images: ImageDataModule, preprocess: dict[str, Any],
    selection: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """The backbone's features of every split, from the cache or extracted now (and whether it was a hit)."""
    extract = {"channels_last": module.backbone_cfg.channels_last, "autocast_dtype": autocast_dtype(cfg.trainer.get("precision"))}
    dataset = without_neutral_keys(resolved(cfg.dataset), prefix="dataset")
    key = {
        "backbone": cfg.backbone.name,
        "backbone_kwargs": module.backbone_cfg.kwargs,
        "pool": cfg.head.get("pool"),
        "in_chans": int(cfg.backbone.in_chans),
        # the weights as loaded: a file, the hub, or a seeded random init all hash by value
        "weights": state_digest(module.backbone),
        "timm": timm.__version__,
        "preprocess": preprocess,
        "extract": extract,
        # redacted: the key is stored in the cache file's metadata
        "dataset": redact({k: v for k, v in dataset.items() if k not in TRAINING_ONLY_DATASET_KEYS}),
    }
    if plan.splits.file_backed:  # files can change under the same config: key on them too
        key["files"] = selection["data_fingerprint"]
    workers = images.num_workers if plan.splits.file_backed else 0
    return cached_features(
        module.backbone, images.eval_datasets(), cache_dir(cfg) / "features", key, device=device_of(cfg), num_workers=workers, **extract
    )
