"""The typed config (``transferlab.config``): every shipped config passes it unchanged, values convert as a user
means them, the model is built from the typed groups, and its checkpoint hyperparameters are plain data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF, make_cfg
from transferlab.config.datasets import DATASET_KINDS
from transferlab.config.location import STUDY_GROUPS, study_folder
from transferlab.config.schema import BackboneConfig, HeadConfig, OptimizerConfig, check_config
from transferlab.config.typed import parse
from transferlab.errors import ConfigError
from transferlab.identity import config_hash
from transferlab.model.module import RunChoices, TransferModule
from transferlab.run.lifecycle import build_run


def _options(group: str) -> list[str]:
    folder = study_folder(group, CONF) if group in STUDY_GROUPS else CONF / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


SHIPPED = [f"{group}={option}" for group in ("dataset", "backbone", "strategy", "head", "optimizer", "trainer", "budget", "logger")
           for option in _options(group)] + [f"experiment={e}" for e in _options("experiment")] + [
           f"sweep={s}" for s in _options("sweep") if s != "optuna_lr"]  # optuna_lr needs its sweeper plugin's config
assert any(c.startswith("experiment=") for c in SHIPPED) and any(c.startswith("sweep=") for c in SHIPPED)


@pytest.mark.parametrize("choice", SHIPPED)
def test_every_shipped_config_passes_and_stays_as_it_was(tmp_path: Path, choice: str) -> None:
    extra = {"dataset=folder": ["dataset.root=/data"], "dataset=manifest": ["dataset.path=/data/labels.csv"]}
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):  # as shipped: no test settings on top
        cfg = compose("config", overrides=[choice, *extra.get(choice, [])])
    before = OmegaConf.to_container(cfg)
    check_config(cfg)
    assert OmegaConf.to_container(cfg) == before  # nothing written back: the config hash of plain YAML values is unchanged


def test_a_quoted_number_or_a_yes_is_typed_and_written_back(tmp_path: Path) -> None:
    quoted = make_cfg(tmp_path, "optimizer.lr='0.01'", "dataset.preload=yes", "seed=3.0")
    config = check_config(quoted)
    assert config.optimizer.lr == 0.01 and config.dataset.preload is True and config.seed == 3
    assert quoted.optimizer.lr == 0.01 and quoted.dataset.preload is True  # the config now holds the typed values
    same = make_cfg(tmp_path, "optimizer.lr=0.01", "dataset.preload=true", "seed=3.0")
    assert config_hash(quoted, "data") == config_hash(same, "data")


def test_each_dataset_kind_has_its_own_keys(tmp_path: Path) -> None:
    assert set(DATASET_KINDS) == {"digits", "glyphs", "folder", "manifest", "torchvision"}
    with pytest.raises(ConfigError, match=r"dataset.root: not a key of dataset kind digits"):
        check_config(make_cfg(tmp_path, "+dataset.root=/data"))  # a folder's key on digits
    with pytest.raises(ConfigError, match=r"dataset.kind='pictures' is unknown; choose one of \['digits'"):
        check_config(make_cfg(tmp_path, "dataset.kind=pictures"))
    assert check_config(make_cfg(tmp_path, "dataset=cifar10")).dataset.tv_name == "CIFAR10"  # type: ignore[attr-defined]


def test_the_cheap_checks_need_no_data_and_no_model(tmp_path: Path) -> None:
    """check_config alone refuses what it can know from the config: before any data loads or a backbone is built."""
    for override, message in [("backbone.name=resnet1", "is not a timm model"), ("head.activation=swishy", "is unknown"),
                              ("optimizer.lr=-1", "must be a positive number"), ("dataset.batch_size=0", "must be ≥ 1")]:
        with pytest.raises(ConfigError, match=message):
            check_config(make_cfg(tmp_path, override))


def test_a_strategy_is_typed_by_its_policy_class(tmp_path: Path) -> None:
    policy = build_run(make_cfg(tmp_path, "backbone.name=test_resnet", "backbone.weights=null", "strategy=gradual",
                                "strategy.milestones=['1',2]", "dataset.per_class=2")).policy
    assert policy.milestones == [1, 2]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"strategy.backbone_lr_scale='fast' is not a number. Fix: strategy.backbone_lr_scale=1.0"):
        check_config(make_cfg(tmp_path, "strategy=finetune", "strategy.backbone_lr_scale=fast"))


def test_the_model_is_built_from_the_typed_groups_and_its_hyperparameters_are_plain(tmp_path: Path) -> None:
    backbone = BackboneConfig(name="test_resnet", kwargs={"drop_rate": 0.1})
    head = parse(HeadConfig, {"hidden": [16], "dropout": 0.2}, "head")
    module = TransferModule(backbone, RunChoices(num_classes=4, input_size=32, layer_decay=0.5), head=head,
                            optimizer=OptimizerConfig(lr=0.05, name="sgd", kwargs={"momentum": 0.9}))
    assert module.head[0].out_features == 16 and module.backbone.drop_rate == 0.1
    hp = dict(module.hparams)
    assert hp["backbone"]["kwargs"] == {"drop_rate": 0.1} and hp["optimizer"]["lr"] == 0.05 and hp["choices"]["num_classes"] == 4
    path = tmp_path / "hp.pt"
    torch.save({"hyper_parameters": hp, "state_dict": module.state_dict()}, path)
    loaded = torch.load(path, weights_only=True)  # what resume reads: no pickled classes inside
    again = TransferModule(**loaded["hyper_parameters"])
    assert again.optimizer_cfg == module.optimizer_cfg and again.head_cfg == module.head_cfg and again.choices == module.choices
    again.load_state_dict(loaded["state_dict"])


def test_a_run_resumes_from_a_checkpoint_with_typed_hyperparameters(tmp_path: Path, one_thread: None) -> None:
    from conftest import crash_then_resume

    cfg = make_cfg(tmp_path, "backbone.name=test_resnet", "backbone.weights=null", "strategy=finetune", "dataset.per_class=4",
                   "dataset.batch_size=16", "trainer.max_epochs=2", "head=mlp", "optimizer=sgd")
    uninterrupted, resumed = crash_then_resume(tmp_path, cfg, crash_epoch=1)
    for name, value in uninterrupted.items():
        assert torch.equal(value, resumed[name]), name
