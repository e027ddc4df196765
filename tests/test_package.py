"""The package's seams with Hydra and other libraries: the study groups beside conf/ (no symlinks), and no
private API of another library unless a test here pins it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException

from conftest import CONF, ROOT
from transferlab.config.location import STUDY_GROUPS, config_dir, config_root

SOURCES = ROOT / "src"

#: private names of other libraries the package uses, each with the test below that pins it (fails when it moves)
PINNED_PRIVATE = {
    "pytorch_lightning.strategies.launchers.subprocess_script._SubprocessScriptLauncher": "test_lightning_relaunches_a_ddp_command_by_its_subprocess_launcher",
}


def private_imports() -> set[str]:
    """``module.name`` of every import in src/ of another library's private module or name (a part starting with _)."""
    found = set()
    for path in SOURCES.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith(("transferlab", "hydra_plugins", "__future__")):
                    continue
                if any(part.startswith("_") for part in name.split(".")):
                    found.add(name)
    return found


def test_other_libraries_private_apis_are_only_the_pinned_ones() -> None:
    assert private_imports() == set(PINNED_PRIVATE), "pin each private API with a test here, or use a public one"
    assert not [n for n in private_imports() if n.startswith("hydra._internal")], "Hydra's sweeper is subclassed no more"


def test_the_private_import_finder_finds_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x.py").write_text("from hydra._internal.core_plugins.basic_sweeper import BasicSweeper\n")
    monkeypatch.setattr(sys.modules[__name__], "SOURCES", tmp_path)
    assert private_imports() == {"hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}


def test_lightning_relaunches_a_ddp_command_by_its_subprocess_launcher() -> None:
    """run.distributed.relaunches_command reads Lightning's private launcher class: a DDP trainer on 2 CPU
    processes, outside SLURM, must still be started by it (else the multirun guard would silently stop guarding)."""
    import pytorch_lightning as pl

    from transferlab.run.distributed import relaunches_command

    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False)
    assert relaunches_command(trainer)
    assert not relaunches_command(pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False))


def test_the_study_groups_are_the_folders_beside_conf_without_symlinks() -> None:
    assert not [p for p in CONF.rglob("*") if p.is_symlink()], "conf/ holds no symlinks"
    assert config_root() == ROOT and config_dir() == CONF
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        loader = GlobalHydra.instance().config_loader()
        for group, folder in STUDY_GROUPS.items():
            assert loader.get_group_options(group) == sorted(p.stem for p in (ROOT / folder).glob("*.yaml")), group
        assert "wandb" not in loader.get_group_options("sweep") and not loader.get_group_options("sweep/wandb")
        cfg = compose("config", overrides=["experiment=digits_transfer", "sweep=fair_x_fraction"])
        assert cfg.experiment_name == "digits_transfer" and cfg.sweep_name == "fair_x_fraction"
        with pytest.raises(HydraException, match="Could not find 'sweep/wandb/lr_search'"):
            compose("config", overrides=["sweep=wandb/lr_search"])  # W&B's sweep files are not Hydra configs


def test_a_users_config_folder_adds_its_own_options_to_the_study_groups(tmp_path: Path) -> None:
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nexperiment_name: mine\n")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=[f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine"])
        assert cfg.experiment_name == "mine"
        assert "digits_transfer" in GlobalHydra.instance().config_loader().get_group_options("experiment")
