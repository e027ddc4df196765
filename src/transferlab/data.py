"""Datasets, splits, nested stratified subsets and the backbone's own preprocessing."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import timm.data
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from transferlab.errors import ConfigError, DataError
from transferlab.reproducible import EpochSampler, next_epoch

Transform = Callable[[Image.Image], torch.Tensor]


@dataclass
class ImageSet:
    """Labelled images held in memory as a uint8 array (N, H, W) or (N, H, W, C)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


@dataclass
class DatasetSplits:
    """A dataset's fixed train / val / test splits and its class names."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    class_names: list[str]


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Indices of train / val / test, stratified by class, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(test_fraction * len(idx)))
        n_val = int(round(val_fraction * len(idx)))
        parts[2].extend(idx[:n_test])
        parts[1].extend(idx[n_test : n_test + n_val])
        parts[0].extend(idx[n_test + n_val :])
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


def _take(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> ImageSet:
    return ImageSet(images[idx], labels[idx])


def digits_splits(val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0, **_: Any) -> DatasetSplits:
    """scikit-learn's bundled handwritten digits (1,797 8×8 images, 10 classes), no download."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    tr, va, te = stratified_split(labels, val_fraction, test_fraction, split_seed)
    return DatasetSplits(_take(images, labels, tr), _take(images, labels, va), _take(images, labels, te), [str(i) for i in range(10)])


def glyph_splits(
    num_classes: int = 60,
    examples_per_class: int = 60,
    render_size: int = 32,
    glyph_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    **_: Any,
) -> DatasetSplits:
    """Procedurally rendered stroke glyphs (the embedded source task), deterministic for ``glyph_seed``."""
    from transferlab.glyphs import render_glyphs

    images, labels = render_glyphs(num_classes, examples_per_class, render_size, glyph_seed)
    tr, va, te = stratified_split(labels, val_fraction, test_fraction, split_seed)
    names = [f"glyph_{i:03d}" for i in range(num_classes)]
    return DatasetSplits(_take(images, labels, tr), _take(images, labels, va), _take(images, labels, te), names)


#: dataset builders by ``dataset.kind``; each takes the dataset config's keys as arguments
DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    "digits": digits_splits,
    "glyphs": glyph_splits,
}


def load_splits(dataset_cfg: Mapping[str, Any]) -> DatasetSplits:
    """Build the splits for a ``dataset`` config and check its ``num_classes`` against the data."""
    kind = dataset_cfg.get("kind", dataset_cfg.get("name"))
    if kind not in DATASETS:
        raise ConfigError(f"dataset.kind={kind!r} is unknown; choose one of {sorted(DATASETS)}.")
    splits = DATASETS[kind](**dataset_cfg)
    expected = dataset_cfg.get("num_classes")
    if expected is not None and int(expected) != len(splits.class_names):
        raise DataError(
            f"dataset.num_classes={expected} but the data has {len(splits.class_names)} classes "
            f"({', '.join(splits.class_names[:8])}…). Fix: set dataset.num_classes={len(splits.class_names)}."
        )
    return splits


def subsample(labels: np.ndarray, fraction: float | None = 1.0, per_class: int | None = None, seed: int = 0,
              class_names: list[str] | None = None) -> np.ndarray:
    """Indices of a stratified, nested subset of ``labels``.

    Each class keeps ``round(fraction × its size)`` examples (or ``per_class``), always the first ones
    of a per-class permutation fixed by ``seed``: the 5 % subset lies inside the 10 % subset.
    """
    classes, counts = np.unique(labels, return_counts=True)
    names = class_names or [str(c) for c in range(int(classes.max()) + 1)]
    if per_class is not None:
        if int(per_class) < 1:
            raise ConfigError(f"dataset.per_class={per_class} must be ≥ 1, or null to use dataset.fraction.")
        smallest = int(counts.min())
        if int(per_class) > smallest:
            cls = names[int(classes[counts.argmin()])]
            raise DataError(
                f"dataset.per_class={per_class} but class {cls!r} has only {smallest} training examples. "
                f"Fix: use dataset.per_class ≤ {smallest}, or dataset.fraction."
            )
    else:
        if fraction is None or not 0 < float(fraction) <= 1:
            raise ConfigError(
                f"dataset.fraction={fraction} must be in (0, 1] (e.g. 0.1 for 10 % of the training split)."
            )
    chosen: list[np.ndarray] = []
    for cls, count in zip(classes, counts):
        k = int(per_class) if per_class is not None else int(math.floor(float(fraction) * count + 0.5))
        if k == 0:
            raise DataError(
                f"dataset.fraction={fraction} leaves class {names[int(cls)]!r} ({count} training examples) "
                f"with no example. Fix: use dataset.fraction ≥ {1.0 / count:.4g}, or dataset.per_class=1."
            )
        idx = np.flatnonzero(labels == cls)
        order = np.random.default_rng([int(seed), int(cls)]).permutation(len(idx))
        chosen.append(idx[order[:k]])
    return np.sort(np.concatenate(chosen))


class ToChannels:
    """Convert any PIL image (L, LA, P, RGB, RGBA, I;16…) to the backbone's channel count."""

    def __init__(self, in_chans: int) -> None:
        if in_chans not in (1, 3):
            raise ConfigError(f"backbone.in_chans={in_chans}: image data supports 1 (grayscale) or 3 (RGB).")
        self.mode = "L" if in_chans == 1 else "RGB"

    def __call__(self, img: Image.Image) -> Image.Image:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (0, 0, 0, 255))
            img = Image.alpha_composite(background, img)
        if img.mode.startswith("I") or img.mode == "F":
            arr = np.asarray(img, dtype=np.float64)
            span = max(arr.max() - arr.min(), 1e-12)
            img = Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8))
        return img.convert(self.mode)


def build_transform(data_config: Mapping[str, Any], in_chans: int, training: bool = False, **augment: Any) -> Transform:
    """timm's ``create_transform`` for the backbone's data config, after a channel conversion."""
    from torchvision import transforms

    cfg = dict(data_config)
    if in_chans == 1:
        cfg["mean"], cfg["std"] = (float(np.mean(cfg["mean"])),), (float(np.mean(cfg["std"])),)
    cfg["input_size"] = (in_chans, *tuple(cfg["input_size"])[1:])
    tf = timm.data.create_transform(**cfg, is_training=training, **(augment if training else {}))
    return transforms.Compose([ToChannels(in_chans), tf])


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


class SplitsDataModule(pl.LightningDataModule):
    """Loaders over three ready datasets (train, val, test).

    The training order depends only on (``seed``, epoch): see ``transferlab.reproducible.EpochSampler``.
    """

    def __init__(self, batch_size: int = 64, num_workers: int = 0, pin_memory: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.start_epoch = 0  # the epoch training (re)starts at: restored from a checkpoint on resume
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        assert dataset is not None, "setup() must run first"
        sampler = EpochSampler(dataset, self.seed, self.start_epoch) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            generator=sampler.generator if sampler is not None else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
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


class TensorDataModule(SplitsDataModule):
    """Pre-computed features: the training split subsampled exactly as ImageDataModule does."""

    def __init__(self, features: Mapping[str, TensorDataset], train_indices: np.ndarray, **loader_kwargs: Any) -> None:
        super().__init__(**loader_kwargs)
        x, y = features["train"].tensors
        idx = torch.as_tensor(train_indices, dtype=torch.long)
        self.train_set = TensorDataset(x[idx], y[idx])
        self.val_set = features["val"]
        self.test_set = features["test"]
