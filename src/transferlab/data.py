"""Datasets, splits, nested stratified subsets and the backbone's own preprocessing."""

from __future__ import annotations

import hashlib
import inspect
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

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

    def fingerprint(self) -> str:
        """SHA-256 of the pixels and labels."""
        h = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()


@dataclass
class FileImageSet:
    """Labelled images read from files on demand (``load`` opens the file; nothing is held in memory)."""

    paths: np.ndarray  # str paths, absolute
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        path = str(self.paths[index])
        try:
            with Image.open(path) as img:
                img.load()
                return img
        except Exception as err:  # noqa: BLE001 - re-raised naming the file and the fix
            raise DataError(
                f"cannot read image {path}: {type(err).__name__}: {err}. Fix: replace or remove the file. With "
                "dataset.verify=true (the default) unreadable files are found before training, and "
                "dataset.on_bad_file=skip leaves them out."
            ) from err

    def fingerprint(self) -> str:
        """SHA-256 over each file's path, size, modification time and label (not the bytes: cheap)."""
        h = hashlib.sha256()
        for path, label in zip(self.paths, self.labels):
            try:
                st = os.stat(path)
                h.update(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\t{int(label)}\n".encode())
            except OSError:
                h.update(f"{path}\t-\t-\t{int(label)}\n".encode())
        return h.hexdigest()


class Images(Protocol):
    """What a split is: labels, a length, and ``load(i)`` giving a PIL image."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def load(self, index: int) -> Image.Image: ...

    def fingerprint(self) -> str: ...


@dataclass
class DatasetSplits:
    """A dataset's fixed train / val / test splits and its class names."""

    train: Images
    val: Images
    test: Images
    class_names: list[str]

    @property
    def file_backed(self) -> bool:
        """True when the images are read from files (not held in memory)."""
        return any(isinstance(getattr(self, s), FileImageSet) for s in ("train", "val", "test"))

    def fingerprint(self) -> str:
        """Identity of the data: pixels (in memory) or path, size and mtime of each file, with labels."""
        h = hashlib.sha256("\n".join(self.class_names).encode())
        for split in ("train", "val", "test"):
            h.update(getattr(self, split).fingerprint().encode())
        return h.hexdigest()[:20]


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


def folder_splits(**dataset_cfg: Any) -> DatasetSplits:
    """An image folder tree (``dataset=folder``); see ``transferlab.imagefiles.folder_splits``."""
    from transferlab.imagefiles import folder_splits as build

    return build(**dataset_cfg)


def manifest_splits(**dataset_cfg: Any) -> DatasetSplits:
    """A CSV / Parquet manifest (``dataset=manifest``); see ``transferlab.imagefiles.manifest_splits``."""
    from transferlab.imagefiles import manifest_splits as build

    return build(**dataset_cfg)


def torchvision_splits(**dataset_cfg: Any) -> DatasetSplits:
    """A torchvision dataset by name (``dataset=torchvision``); see ``transferlab.tvdatasets``."""
    from transferlab.tvdatasets import torchvision_splits as build

    return build(**dataset_cfg)


#: dataset builders by ``dataset.kind``; each takes the dataset config's keys as arguments
DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    "digits": digits_splits,
    "glyphs": glyph_splits,
    "folder": folder_splits,
    "manifest": manifest_splits,
    "torchvision": torchvision_splits,
}


def load_splits(dataset_cfg: Mapping[str, Any]) -> DatasetSplits:
    """Build the splits for a ``dataset`` config and check ``num_classes`` and ``classes`` against the data.

    ``dataset.num_classes: null`` takes the class count from the data (``len(splits.class_names)``).
    """
    kind = dataset_cfg.get("kind", dataset_cfg.get("name"))
    if kind not in DATASETS:
        raise ConfigError(f"dataset.kind={kind!r} is unknown; choose one of {sorted(DATASETS)}.")
    splits = DATASETS[kind](**dataset_cfg)
    expected = dataset_cfg.get("num_classes")
    if expected is not None and int(expected) != len(splits.class_names):
        raise DataError(
            f"dataset.num_classes={expected} but the data has {len(splits.class_names)} classes "
            f"({', '.join(splits.class_names[:8])}…). Fix: set dataset.num_classes={len(splits.class_names)} "
            "(or null to take the count from the data)."
        )
    classes = dataset_cfg.get("classes")
    if classes is not None and [str(c) for c in classes] != list(splits.class_names):
        raise DataError(
            f"dataset.classes={list(classes)[:8]} does not match the data's classes {splits.class_names[:8]} "
            "(names and order). Fix: correct dataset.classes, or set it to null to take the classes from the data."
        )
    for split in ("train", "val", "test"):
        if len(getattr(splits, split)) == 0:
            raise DataError(
                f"dataset {kind!r}: the {split} split is empty. Fix: add {split} data, or set dataset.{split}_fraction > 0 "
                "so it is taken from the training data."
                if split != "train" else f"dataset {kind!r}: the training split is empty. Fix: add training data."
            )
    missing = sorted(set(range(len(splits.class_names))) - set(np.unique(splits.train.labels).tolist()))
    if missing:
        names = [splits.class_names[i] for i in missing]
        raise DataError(
            f"dataset {kind!r}: class(es) {names[:8]} have no training example"
            f"{' after val/test were set aside' if dataset_cfg.get('val_fraction') or dataset_cfg.get('test_fraction') else ''}. "
            "Fix: add images for them, lower dataset.val_fraction / dataset.test_fraction, or drop those classes."
        )
    return splits


def train_selection(splits: DatasetSplits, indices: np.ndarray, dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The record of a run's exact training examples (``train_indices.json``).

    ``indices`` index the training split (fixed by ``dataset.split_seed``); file-backed data adds each
    example's file path, so a result can be traced to its images.
    """
    idx = np.asarray(indices, dtype=np.int64)
    record: dict[str, Any] = {
        "dataset": dataset_cfg.get("name"),
        "kind": dataset_cfg.get("kind"),
        "split_seed": dataset_cfg.get("split_seed"),
        "fraction": dataset_cfg.get("fraction"),
        "per_class": dataset_cfg.get("per_class"),
        "n_train": int(len(idx)),
        "n_train_split": int(len(splits.train)),
        "class_names": list(splits.class_names),
        "data_fingerprint": splits.fingerprint(),
        "indices": idx.tolist(),
        "labels": np.asarray(splits.train.labels)[idx].astype(int).tolist(),
    }
    if isinstance(splits.train, FileImageSet):
        record["paths"] = [str(p) for p in np.asarray(splits.train.paths)[idx]]
    return record


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
    """Convert any PIL image (1, L, LA, P, PA, RGB, RGBA, CMYK, I;16, I, F…) to the backbone's channel count.

    Transparent pixels are composited onto black. 16-bit images keep their brightness (scaled by
    255/65535, as every image of a dataset must be scaled alike); 32-bit integer and float images are
    scaled from the range their values fit (0–1, 0–255, 0–65535), else stretched per image.
    """

    def __init__(self, in_chans: int) -> None:
        if in_chans not in (1, 3):
            raise ConfigError(f"backbone.in_chans={in_chans}: image data supports 1 (grayscale) or 3 (RGB).")
        self.mode = "L" if in_chans == 1 else "RGB"

    def __call__(self, img: Image.Image) -> Image.Image:
        if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (0, 0, 0, 255))
            img = Image.alpha_composite(background, img)
        if img.mode.startswith("I") or img.mode == "F":
            img = Image.fromarray(_to_uint8(np.asarray(img), img.mode))
        return img.convert(self.mode)


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth pixels as 0–255 (see ToChannels)."""
    arr = arr.astype(np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        scale = 65535.0
    elif lo >= 0 and hi <= 1.0 and mode == "F":
        scale = 1.0
    elif lo >= 0 and hi <= 255:
        scale = 255.0
    elif lo >= 0 and hi <= 65535:
        scale = 65535.0
    else:  # outside any fixed range: stretch this image
        return ((arr - lo) / max(hi - lo, 1e-12) * 255).round().astype(np.uint8)
    return np.clip(arr / scale * 255.0, 0, 255).round().astype(np.uint8)


#: ``dataset.augment.auto_augment`` values that mean torchvision's TrivialAugmentWide (timm has none)
TRIVIAL_AUGMENT = ("trivialaugment", "trivialaugmentwide", "trivial", "ta_wide")


def augment_options(augment: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``dataset.augment`` keys against timm's ``create_transform`` and make lists tuples."""
    allowed = set(inspect.signature(timm.data.create_transform).parameters)
    reserved = {"input_size", "is_training", "mean", "std", "crop_pct", "separate", "use_prefetcher", "no_aug"}
    unknown = sorted(set(augment) - (allowed - reserved))
    if unknown:
        options = ", ".join(sorted(allowed - reserved - {"naflex", "patch_size", "max_seq_len", "patchify",
                                                         "patchify_channels_last", "patchify_flatten", "tf_preprocessing"}))
        raise ConfigError(
            f"dataset.augment: unknown option(s) {unknown}. Use timm create_transform training options: {options}."
        )
    return {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in augment.items()}


def build_transform(data_config: Mapping[str, Any], in_chans: int, training: bool = False, **augment: Any) -> Transform:
    """timm's ``create_transform`` for the backbone's data config, after a channel conversion.

    ``augment`` (timm training options: scale, ratio, hflip, vflip, color_jitter, auto_augment, re_prob…)
    is used only when ``training``; ``auto_augment='trivialaugment'`` selects torchvision's
    TrivialAugmentWide in the place timm puts its auto-augment.
    """
    from torchvision import transforms

    cfg = dict(data_config)
    if in_chans == 1:
        cfg["mean"], cfg["std"] = (float(np.mean(cfg["mean"])),), (float(np.mean(cfg["std"])),)
    cfg["input_size"] = (in_chans, *tuple(cfg["input_size"])[1:])
    if not training:
        return transforms.Compose([ToChannels(in_chans), timm.data.create_transform(**cfg, is_training=False)])
    options = augment_options(augment)
    trivial = str(options.get("auto_augment") or "").lower().replace("-", "").replace("_", "") in {
        t.replace("_", "") for t in TRIVIAL_AUGMENT
    }
    try:
        if trivial:
            options["auto_augment"] = None
            options.setdefault("color_jitter", None)  # as timm does when an auto-augment is on
            primary, secondary, final = timm.data.create_transform(**cfg, is_training=True, separate=True, **options)
            fill = [int(round(255 * m)) for m in cfg["mean"]]
            trivial_tf = transforms.TrivialAugmentWide(fill=fill if in_chans == 3 else fill[0])
            tf: Transform = transforms.Compose([primary, trivial_tf, secondary, final])
        else:
            tf = timm.data.create_transform(**cfg, is_training=True, **options)
    except (AssertionError, ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"dataset.augment={dict(augment)}: timm rejects it ({type(err).__name__}: {err}).") from err
    return transforms.Compose([ToChannels(in_chans), tf])


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


class SplitsDataModule(pl.LightningDataModule):
    """Loaders over three ready datasets (train, val, test).

    The training order depends only on (``seed``, epoch): see ``transferlab.reproducible.EpochSampler``.
    """

    def __init__(
        self, batch_size: int = 64, num_workers: int = 0, pin_memory: bool = False, persistent_workers: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.seed = seed
        self.start_epoch = 0  # the epoch training (re)starts at: restored from a checkpoint on resume
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        assert dataset is not None, "setup() must run first"
        sampler = EpochSampler(dataset, self.seed, self.start_epoch) if shuffle else None
        batched = isinstance(dataset, TensorDataset)  # preloaded images or cached features
        return DataLoader(
            BatchedTensors(*dataset.tensors) if batched else dataset,
            batch_size=self.batch_size,
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
