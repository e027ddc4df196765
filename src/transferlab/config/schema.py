"""The run's typed config: one dataclass per config group, ``RunConfig`` for the whole, and ``check_config``.

See ``transferlab.config`` for why the schema is checked at the start of a run rather than merged by Hydra.
Each group's dataclass lists its keys with their types; values a type allows but a run cannot use are
refused by the group's ``check(key)``, naming the owner's rule where one exists (``model.optim``,
``model.heads``, ``data.scan``). The YAML files under ``conf/`` hold the defaults a run starts from.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from transferlab.config.datasets import DatasetConfig
from transferlab.config.plain import plain
from transferlab.config.typed import Changes, example, parse
from transferlab.errors import ConfigError
from transferlab.model.backbone import check_model_name
from transferlab.model.heads import check_head
from transferlab.model.optim import check_optimizer
from transferlab.strategies.registry import policy_arguments

#: Trainer arguments the run sets itself (``run.trainer.make_trainer``), not config keys
_RUN_SETS = ("self", "callbacks", "logger", "default_root_dir", "plugins")


@dataclass(kw_only=True)
class BackboneConfig:
    """``backbone``: a timm model by name, its weights and speed settings."""

    name: str = example("resnet18")
    weights: str | None = example("hub", None)  # null · hub · a .safetensors/.pth file · source
    in_chans: int = 3
    kwargs: dict[str, Any] = example({"drop_path_rate": 0.1}, {})  # extra timm.create_model arguments
    channels_last: bool = False
    compile: bool = False
    grad_checkpointing: bool = False

    def check(self, key: str) -> None:
        check_model_name(self.name)
        if self.in_chans < 1:
            raise ConfigError(f"{key}.in_chans={self.in_chans} must be ≥ 1. Fix: {key}.in_chans=3")


@dataclass(kw_only=True)
class HeadConfig:
    """``head``: linear, or an MLP on the pooled features."""

    name: str = "linear"
    hidden: list[int] = example([128], [])
    dropout: float = 0.0
    activation: str = "relu"
    pool: str | None = example("avg", None)  # timm global_pool; null: the backbone's default

    def check(self, key: str) -> None:
        check_head(self.hidden, self.dropout, self.activation)


@dataclass(kw_only=True)
class OptimizerConfig:
    """``optimizer``: by name, the head's LR (the backbone's is scaled by the strategy), a per-step schedule."""

    name: str = "adamw"
    lr: float = 0.001
    weight_decay: float = 0.01
    scheduler: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    kwargs: dict[str, Any] = example({"momentum": 0.9}, {})  # extra optimizer arguments

    def check(self, key: str) -> None:
        check_optimizer(self.name, float(self.lr), float(self.weight_decay), self.scheduler)
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"{key}.label_smoothing={self.label_smoothing} must be in [0, 1). Fix: {key}.label_smoothing=0.1")
        if self.warmup_epochs < 0:
            raise ConfigError(f"{key}.warmup_epochs={self.warmup_epochs} must be ≥ 0. Fix: {key}.warmup_epochs=0")


def lightning_arguments() -> list[str]:
    """The arguments of Lightning's ``Trainer`` (its public signature) that a config may set."""
    return [p for p in inspect.signature(pl.Trainer.__init__).parameters if p not in _RUN_SETS]


@dataclass(kw_only=True)
class TrainerConfig:
    """``trainer``: Lightning ``Trainer`` arguments by their own names; those the run reads are typed here,
    any other Lightning argument is passed on as given."""

    what: ClassVar[str] = "trainer (Lightning Trainer arguments)"
    more_keys: ClassVar = staticmethod(lightning_arguments)
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    max_epochs: int | None = example(10, None)
    precision: int | str | None = example("32-true", None)
    deterministic: bool | str | None = None
    benchmark: bool | None = None
    sync_batchnorm: bool = False
    log_every_n_steps: int | None = None
    num_sanity_val_steps: int | None = None
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None

    def check(self, key: str) -> None:
        if self.max_epochs is not None and self.max_epochs < -1:
            raise ConfigError(f"{key}.max_epochs={self.max_epochs} must be ≥ 1 (or -1 for no limit). Fix: {key}.max_epochs=10")


@dataclass(kw_only=True)
class BudgetRow:
    """One row of ``budget.table``: ``steps`` for training sets of fewer than ``below`` examples (null: any)."""

    below: int | None = example(100, None)
    steps: int = example(100)


@dataclass(kw_only=True)
class BudgetConfig:
    """``budget``: how many optimizer steps a run gets (``run.trainer.budget_steps`` applies the rule)."""

    rule: str = "epochs"  # epochs | steps | by_size
    steps: int | None = example(200, None)
    table: list[BudgetRow] | None = None
    epoch_steps: int | None = example(10, None)


@dataclass(kw_only=True)
class LoggerConfig:
    """``logger``: csv, wandb or none."""

    name: str = "csv"
    project: str | None = None
    entity: str | None = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"


@dataclass(kw_only=True)
class PathsConfig:
    """``paths``: where runs and caches go."""

    runs_dir: str = "runs"
    cache_dir: str = ".cache/transferlab"
    output_dir: str | None = None


@dataclass(kw_only=True)
class SourceConfig:
    """``source``: the task behind ``backbone.weights=source``, trained once from scratch."""

    max_epochs: int = 8
    lr: float | None = example(0.002, None)
    weight_decay: float | None = example(0.05, None)
    seed: int = 0
    dataset: DatasetConfig | None = None


@dataclass(kw_only=True)
class OptunaTrialConfig:
    """``optuna_trial``: the Optuna trial a run reports its validations to, and whose study's pruner may
    stop it (``run.pruning``). Set by ``hydra/sweeper=optuna_study`` when it prunes, not by hand."""

    storage: str = example("sqlite:////path/to/sweep/optuna.db")
    study: str = example("digits_transfer-optuna_lr")
    number: int = example(0)


@dataclass(kw_only=True)
class RunConfig:
    """The whole config of one run. Keys outside the groups are free (``+extra.note=…`` annotates a run),
    except one close to a known key: that is a typo, and refused."""

    what: ClassVar[str] = "the config"
    extra_keys: ClassVar[str] = "typo"
    experiment_name: str = "default"
    sweep_name: str | None = None
    seed: int = 0
    monitor: str = "val/acc"
    monitor_mode: Literal["max", "min"] = "max"
    optimized_metric: str = "val/acc_best"
    min_train_steps: int = 0
    max_validations: int | None = example(20, None)
    keep_checkpoints: bool = False
    checkpoint_every_s: float = 30.0
    signal_finish_epoch_s: float = 30.0
    rung_fraction: float | None = example(0.33, None)
    optuna_trial: OptunaTrialConfig | None = None
    dataset: DatasetConfig
    backbone: BackboneConfig
    strategy: dict[str, Any]  # checked against its policy class's __init__ (strategies.registry)
    head: HeadConfig = field(default_factory=HeadConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    source: SourceConfig | None = None

    def check(self, key: str) -> None:
        for name in ("min_train_steps", "checkpoint_every_s", "signal_finish_epoch_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be ≥ 0. Fix: {name}=0")
        if self.max_validations is not None and self.max_validations < 1:
            raise ConfigError(f"max_validations={self.max_validations} must be ≥ 1, or null for every epoch. Fix: max_validations=20")
        if self.rung_fraction is not None and not 0 < self.rung_fraction <= 1:
            raise ConfigError(f"rung_fraction={self.rung_fraction} must be in (0, 1], or null for the whole budget. "
                              "Fix: leave it to hydra.sweeper.halving (rungs: [0.11, 0.33]), or rung_fraction=null")


def plain_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config as a plain, resolved dict (without Hydra's own ``hydra`` node); an interpolation that
    cannot be resolved is a ConfigError."""
    try:
        values = plain(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"the config cannot be resolved: {err}. Fix: set the missing value or environment "
                          "variable it names (${{oc.env:NAME,default}} gives a default).") from None
    assert isinstance(values, dict)
    values.pop("hydra", None)
    return values


def check_config(cfg: DictConfig | Mapping[str, Any]) -> RunConfig:
    """The run's typed config: every group checked, before anything is written or loaded.

    A value converted to its key's type (a quoted number, ``yes`` for true) is written back into ``cfg``,
    so the config hash and every later reader see the typed value. Raises ConfigError (one line: the key,
    what is wrong, the fix)."""
    plain = plain_config(cfg)
    changes: Changes = []
    config = parse(RunConfig, plain, "", changes)
    policy_arguments(config.strategy, changes)
    if changes and isinstance(cfg, DictConfig):
        for key, value in changes:
            OmegaConf.update(cfg, key, value, merge=False)
    return config
