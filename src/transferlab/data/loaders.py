"""Data loaders: settings for this machine, image datasets, in-memory batches and the Lightning data modules."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from transferlab.data.sampler import EpochSampler, next_epoch
from transferlab.data.splits import DatasetSplits, ImageSet
from transferlab.data.transforms import Transform
from transferlab.errors import ConfigError


def loader_settings(
    num_workers: int | str | None = "auto",
    pin_memory: bool | str | None = "auto",
    persistent_workers: bool | str | None = "auto",
    decode_on_the_fly: bool = True,
    cuda: bool = False,
) -> dict[str, Any]:
    """DataLoader settings for this machine.

    ``num_workers: auto`` is ``min(4, cpus - 1)`` when images are decoded or augmented per step, else 0
    (tensors in memory gain nothing from worker processes). ``pin_memory: auto`` is on when training on
    CUDA. ``persistent_workers: auto`` keeps workers alive between epochs whenever there are any.
    """
    if num_workers in (None, "auto"):
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(4, max(cpus - 1, 0)) if decode_on_the_fly else 0
    else:
        try:
            workers = int(num_workers)
        except (TypeError, ValueError):
            workers = -1
        if workers < 0:
            raise ConfigError(f"dataset.num_workers={num_workers!r} must be auto or an integer ≥ 0.")
    pin = cuda if pin_memory in (None, "auto") else _flag(pin_memory, "dataset.pin_memory")
    persist = workers > 0 if persistent_workers in (None, "auto") else _flag(persistent_workers, "dataset.persistent_workers")
    return {"num_workers": workers, "pin_memory": pin, "persistent_workers": persist and workers > 0}


def _flag(value: Any, key: str) -> bool:
    """A true / false config value (``key`` names it in the error)."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{key}={value!r} must be auto, true or false.")


class ImageDataset(Dataset):
    """``(transform(image), label)`` for the chosen indices of an ImageSet."""

    def __init__(self, images: ImageSet, transform: Transform, indices: np.ndarray | None = None) -> None:
        self.images = images
        self.transform = transform
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        return self.transform(self.images.load(j)), int(self.images.labels[j])


def materialize(dataset: Dataset) -> TensorDataset:
    """Run a deterministic transform once and keep the tensors (small datasets, no augmentation)."""
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return TensorDataset(torch.stack(xs), torch.as_tensor(ys, dtype=torch.long))


class BatchedTensors(TensorDataset):
    """In-memory tensors a DataLoader reads one batch at a time: a single index operation per batch
    instead of one per example plus a collate (DataLoader calls ``__getitems__``). Same batches, same order."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(tensor[index] for tensor in self.tensors)


def keep_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate function of ``BatchedTensors``: the batch is already stacked."""
    return batch


def train_batch_size(batch_size: int, n_train: int) -> int:
    """The training batch: never more than the training set (a tiny set's packed epoch is then whole passes
    per batch, as a one-pass epoch is one batch)."""
    return min(int(batch_size), int(n_train))


class SplitsDataModule(pl.LightningDataModule):
    """Loaders over three ready datasets (train, val, test).

    The training order depends only on (``seed``, epoch): see ``transferlab.data.sampler.EpochSampler``;
    a training epoch is ``passes`` passes over the training set.
    """

    def __init__(
        self, batch_size: int = 64, num_workers: int = 0, pin_memory: bool = False, persistent_workers: bool = False,
        seed: int = 0, passes: int = 1,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.seed = seed
        self.passes = passes
        self.start_epoch = 0  # the epoch training (re)starts at: restored from a checkpoint on resume
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        """A loader over ``dataset``: in (seed, epoch) order when ``shuffle``, whole batches from in-memory tensors."""
        assert dataset is not None, "setup() must run first"
        sampler = EpochSampler(dataset, self.seed, self.start_epoch, passes=self.passes) if shuffle else None
        batched = isinstance(dataset, TensorDataset)  # preloaded images or cached features
        return DataLoader(
            BatchedTensors(*dataset.tensors) if batched else dataset,
            batch_size=train_batch_size(self.batch_size, len(dataset)) if shuffle else self.batch_size,
            collate_fn=keep_batch if batched else None,
            sampler=sampler,
            generator=sampler.generator if sampler is not None else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def state_dict(self) -> dict[str, Any]:
        # Lightning may create the first training iterator (and, with worker processes, draw its indices)
        # before it calls set_epoch on a resumed run: the sampler must start at the right epoch itself
        return {"next_epoch": next_epoch(self.trainer)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.start_epoch = int(state_dict.get("next_epoch", 0))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


class ImageDataModule(SplitsDataModule):
    """Images through the backbone's preprocessing; training on ``train_indices`` (see ``subsample``)."""

    def __init__(
        self,
        splits: DatasetSplits,
        train_transform: Transform,
        eval_transform: Transform,
        train_indices: np.ndarray,
        preload: bool = True,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(**loader_kwargs)
        self.splits = splits
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.train_indices = np.asarray(train_indices)
        self.preload = preload

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        wrap: Callable[[Dataset], Dataset] = materialize if self.preload else (lambda d: d)
        augmenting = self.train_transform is not self.eval_transform
        train = ImageDataset(self.splits.train, self.train_transform, self.train_indices)
        self.train_set = train if augmenting else wrap(train)
        self.val_set = wrap(ImageDataset(self.splits.val, self.eval_transform))
        self.test_set = wrap(ImageDataset(self.splits.test, self.eval_transform))

    def eval_datasets(self) -> dict[str, Dataset]:
        """The full train / val / test splits under the evaluation transform (for feature extraction)."""
        return {
            name: ImageDataset(getattr(self.splits, name), self.eval_transform)
            for name in ("train", "val", "test")
        }
