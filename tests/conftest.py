"""Shared test helpers: compose the project's Hydra config with small, fast settings."""

from __future__ import annotations

import os
from collections.abc import Callable
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


def crash_then_resume(
    tmp_path: Path,
    cfg: DictConfig,
    crash_epoch: int,
    crash_batch: int = 1,
    reload_dataloaders: bool = False,
    after_crash: Callable[[Path], None] | None = None,
) -> tuple[dict, dict]:
    """Fit ``cfg`` uninterrupted, then fit it again with a crash at (``crash_epoch``, ``crash_batch``) and resume
    from the ``last.ckpt`` written at each epoch end (``after_crash`` sees it first). Returns both final state dicts."""
    from pytorch_lightning.callbacks import Callback, ModelCheckpoint

    from transferlab.run.lifecycle import build_run
    from transferlab.run.trainer import make_trainer

    class Crash(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            if trainer.current_epoch == crash_epoch and batch_idx == crash_batch:
                raise RuntimeError("simulated crash")

    def fit(folder: str, crash: bool, resume: bool) -> dict:
        run = build_run(cfg)
        last = ModelCheckpoint(dirpath=str(tmp_path / folder), filename="last", save_on_train_epoch_end=True,
                               enable_version_counter=False)
        callbacks = [run.policy, last, *([Crash()] if crash else [])]
        trainer = make_trainer(cfg, tmp_path / folder, callbacks, None, run.n_train, reload_dataloaders=reload_dataloaders)
        ckpt = str(tmp_path / folder / "last.ckpt") if resume else None
        trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=ckpt, weights_only=True)
        return {k: v.detach().clone() for k, v in run.module.state_dict().items()}

    uninterrupted = fit("a", crash=False, resume=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit("b", crash=True, resume=False)
    if after_crash is not None:
        after_crash(tmp_path / "b" / "last.ckpt")
    return uninterrupted, fit("b", crash=False, resume=True)


def read_result(out: Path) -> dict | None:
    """The run's ``result.json`` as a plain dict (None when missing or unreadable)."""
    from transferlab.files import read_json
    from transferlab.record import RESULT_FILE

    return read_json(Path(out) / RESULT_FILE)
