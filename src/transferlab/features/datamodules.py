"""Data modules over cached backbone features: features only, or features while the backbone is frozen and
images after."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from transferlab.data.loaders import ImageDataModule, SplitsDataModule
from transferlab.data.sampler import next_epoch
from transferlab.errors import ConfigError


class TensorDataModule(SplitsDataModule):
    """Pre-computed features: the training split subsampled exactly as ImageDataModule does."""

    def __init__(self, features: Mapping[str, TensorDataset], train_indices: np.ndarray, **loader_kwargs: Any) -> None:
        super().__init__(**loader_kwargs)
        x, y = features["train"].tensors
        idx = torch.as_tensor(train_indices, dtype=torch.long)
        self.train_set = TensorDataset(x[idx], y[idx])
        self.val_set = features["val"]
        self.test_set = features["test"]


class StagedDataModule(pl.LightningDataModule):
    """Cached features while the backbone is frozen (the first ``feature_epochs`` epochs), then images.

    LP-FT's linear-probing epochs (and gradual's epochs before its first milestone) train on the feature
    cache: the same examples in the same order as the images would be, one backbone pass for a whole
    sweep. The Trainer must reload its loaders every epoch (``reload_dataloaders_every_n_epochs=1``);
    each loader is made once and handed back on every reload, so persistent workers survive. Testing
    always runs on images (the backbone has changed since the features were computed). Under DDP the
    images serve every epoch: a backbone left out of the forward pass would stall DDP's gradient reduction.
    """

    def __init__(self, features: TensorDataModule, images: ImageDataModule, feature_epochs: int) -> None:
        super().__init__()
        self.features = features
        self.images = images
        self.feature_epochs = int(feature_epochs)
        self._loaders: dict[tuple[str, str], DataLoader] = {}

    def setup(self, stage: str | None = None) -> None:
        if stage == "fit" and self.trainer is not None and self.trainer.reload_dataloaders_every_n_epochs != 1:
            raise ConfigError(
                "StagedDataModule switches from cached features to images between epochs, but this Trainer never "
                "reloads its data loaders. Fix: Trainer(reload_dataloaders_every_n_epochs=1) "
                "(transferlab.train.make_trainer(..., reload_dataloaders=True))."
            )
        self.images.setup(stage)
        for part in (self.features, self.images):
            part.trainer = self.trainer  # their samplers' resume state reads the trainer's epoch

    def on_features(self) -> bool:
        """Whether this epoch trains on cached features."""
        trainer = self.trainer
        if trainer is None:
            return self.feature_epochs > 0
        return trainer.current_epoch < self.feature_epochs and trainer.world_size == 1

    def _loader(self, split: str) -> DataLoader:
        """This epoch's loader for ``split`` (features or images), made once and then handed back."""
        stage = "features" if split != "test" and self.on_features() else "images"
        if (stage, split) not in self._loaders:
            part: SplitsDataModule = getattr(self, stage)
            self._loaders[stage, split] = getattr(part, f"{split}_dataloader")()
        return self._loaders[stage, split]

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def state_dict(self) -> dict[str, Any]:
        return {"next_epoch": next_epoch(self.trainer)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for part in (self.features, self.images):
            part.load_state_dict(state_dict)
