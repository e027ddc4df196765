"""Shared test helpers: compose the project's Hydra config with small, fast settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

#: overrides that keep a run to a few seconds on 2 CPU cores
FAST = [
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "source.max_epochs=1",
    "source.dataset.num_classes=10",
    "source.dataset.examples_per_class=12",
]

#: three backbone families, tiny timm test models (random init, no download)
FAMILIES = ["test_resnet", "test_vit", "test_efficientnet"]


def make_cfg(tmp_path: Path, *overrides: str) -> DictConfig:
    """The project config with FAST settings, the given overrides, and paths under ``tmp_path``."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(
            "config",
            overrides=[
                *FAST,
                f"paths.runs_dir={tmp_path / 'runs'}",
                f"paths.cache_dir={tmp_path / 'cache'}",
                *overrides,
            ],
        )


@pytest.fixture(autouse=True)
def _quiet_lightning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_DISABLE_FORK", "1")


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny models gain nothing from more, and on a shared machine more cost a lot."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
