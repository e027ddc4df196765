"""``dataset=torchvision``: torchvision datasets by name (``dataset.tv_name=CIFAR10``), with their own download."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.data.fingerprint import fingerprint
from transferlab.data.scan import FileOptions, scan_images
from transferlab.data.splits import DatasetSplits, FileImageSet, ImageSet, Images, carve_missing
from transferlab.errors import ConfigError, DataError


@dataclass(frozen=True)
class TVSpec:
    """How to build a torchvision dataset's official splits, and where its files live under ``root``.

    ``splits`` maps train / val / test to constructor arguments; a missing split is taken from train
    by ``val_fraction`` / ``test_fraction``, stratified by ``split_seed``.
    """

    splits: Mapping[str, Mapping[str, Any]]
    folder: str
    extra: Mapping[str, Any] = field(default_factory=dict)


TORCHVISION: dict[str, TVSpec] = {
    "CIFAR10": TVSpec({"train": {"train": True}, "test": {"train": False}}, "cifar-10-batches-py"),
    "CIFAR100": TVSpec({"train": {"train": True}, "test": {"train": False}}, "cifar-100-python"),
    "MNIST": TVSpec({"train": {"train": True}, "test": {"train": False}}, "MNIST/raw"),
    "FashionMNIST": TVSpec({"train": {"train": True}, "test": {"train": False}}, "FashionMNIST/raw"),
    "KMNIST": TVSpec({"train": {"train": True}, "test": {"train": False}}, "KMNIST/raw"),
    "SVHN": TVSpec({"train": {"split": "train"}, "test": {"split": "test"}}, "(train_32x32.mat, test_32x32.mat)"),
    "STL10": TVSpec({"train": {"split": "train"}, "test": {"split": "test"}}, "stl10_binary"),
    "Flowers102": TVSpec({"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}}, "flowers-102"),
    "OxfordIIITPet": TVSpec({"train": {"split": "trainval"}, "test": {"split": "test"}}, "oxford-iiit-pet"),
    "EuroSAT": TVSpec({"train": {}}, "eurosat/2750"),
    "DTD": TVSpec({"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}}, "dtd/dtd"),
    "Food101": TVSpec({"train": {"split": "train"}, "test": {"split": "test"}}, "food-101"),
    "FGVCAircraft": TVSpec({"train": {"split": "trainval"}, "test": {"split": "test"}}, "fgvc-aircraft-2013b"),
}


def _instance(name: str, root: Path, download: bool, kwargs: Mapping[str, Any]) -> Any:
    """The torchvision dataset ``name`` for one split (``kwargs``), downloaded into ``root`` when ``download``."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, name)
    where = root / TORCHVISION[name].folder if not TORCHVISION[name].folder.startswith("(") else root
    try:
        return cls(root=str(root), download=download, **TORCHVISION[name].extra, **kwargs)
    except RuntimeError as err:
        if "not found" not in str(err).lower() and "corrupted" not in str(err).lower():
            raise
        raise DataError(
            f"torchvision dataset {name} not found under dataset.root={root} (torchvision: {err}). "
            + (
                f"Fix: set dataset.download=true to download it (needs network), or put its files at {where} "
                f"(torchvision's layout for {name}), or point dataset.root at the folder that holds them."
                if not download
                else f"Fix: check the network and free disk space, or put its files at {where} yourself."
            )
        ) from err
    except OSError as err:  # URLError, socket errors, disk full: the download failed
        raise DataError(
            f"torchvision dataset {name}: download into {root} failed ({type(err).__name__}: {err}). "
            f"Fix: run where the network is reachable, or put its files at {where} and set dataset.download=false."
        ) from err


def _images(ds: Any, name: str) -> ImageSet | FileImageSet:
    """A torchvision dataset's images and labels: arrays in memory, or file paths."""
    labels = next((getattr(ds, a) for a in ("targets", "labels", "_labels") if getattr(ds, a, None) is not None), None)
    data = getattr(ds, "data", None)
    if data is not None and labels is not None and not isinstance(data, (list, str)):
        arr = np.asarray(data)
        if arr.ndim == 4 and arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):  # N, C, H, W (SVHN, STL10)
            arr = arr.transpose(0, 2, 3, 1)
        if arr.ndim == 4 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        return ImageSet(np.ascontiguousarray(arr.astype(np.uint8)), np.asarray(labels, dtype=np.int64))
    if getattr(ds, "samples", None) is not None:  # ImageFolder-based (EuroSAT)
        paths, labs = zip(*ds.samples) if len(ds.samples) else ((), ())
        return FileImageSet(np.asarray([str(p) for p in paths], dtype=object), np.asarray(labs, dtype=np.int64))
    files = next((getattr(ds, a) for a in ("_image_files", "_images", "_samples") if getattr(ds, a, None) is not None), None)
    if files is not None and labels is not None:
        return FileImageSet(np.asarray([str(p) for p in files], dtype=object), np.asarray(labels, dtype=np.int64))
    raise ConfigError(f"torchvision dataset {name}: cannot read its images (unknown layout).")


def torchvision_splits(
    tv_name: str | None = None,
    root: str | None = "data",
    download: bool = True,
    classes: Sequence[str] | None = None,
    **options: Any,
) -> DatasetSplits:
    """A torchvision classification dataset by class name (CIFAR10, CIFAR100, Flowers102, OxfordIIITPet, EuroSAT…).

    Official splits are used where the dataset has them; a missing val (or test) split is taken from
    train, stratified by ``split_seed``. Files are downloaded into ``root`` when ``download`` is true.
    Image files (not in-memory arrays) are scanned like folder datasets (``on_bad_file``, ``verify``).
    ``options``: see ``FileOptions`` (other keys are ignored).
    """
    opts = FileOptions.of(options)
    if tv_name not in TORCHVISION:
        lower = {k.lower(): k for k in TORCHVISION}
        hint = f" Did you mean {lower[str(tv_name).lower()]}?" if str(tv_name).lower() in lower else ""
        raise ConfigError(f"dataset.tv_name={tv_name!r} is not supported.{hint} Choose one of {sorted(TORCHVISION)}.")
    if root in (None, "", "???"):
        raise ConfigError("dataset=torchvision needs dataset.root=DIR: where the dataset's files are (or go).")
    base = Path(str(root)).expanduser().resolve()
    spec = TORCHVISION[tv_name]
    instances = {split: _instance(tv_name, base, bool(download), kw) for split, kw in spec.splits.items()}
    parts = {split: _images(ds, tv_name) for split, ds in instances.items()}
    names = getattr(instances["train"], "classes", None)
    n = int(max(int(p.labels.max()) for p in parts.values() if len(p)) + 1)
    class_names = [str(c) for c in names] if names is not None and len(names) == n else [str(i) for i in range(n)]
    parts = carve_missing(_scanned(parts, tv_name, base, opts), opts.val_fraction, opts.test_fraction, opts.split_seed)
    return DatasetSplits(parts["train"], parts["val"], parts["test"], class_names)


def torchvision_fingerprint(tv_name: str | None = None, **_: Any) -> dict[str, Any]:
    """A torchvision set is named by its class and torchvision's version: torchvision checks the files it
    downloads against their published checksums, and stamping them before the first download would
    change the fingerprint once they are there. ``dataset.root`` is in the config hash."""
    return fingerprint("torchvision", name=tv_name, version=f"torchvision {version('torchvision')}")


def _scanned(parts: dict[str, ImageSet | FileImageSet], name: str, base: Path, opts: FileOptions) -> dict[str, Images]:
    """The splits with their image files scanned (see ``scan_images``); in-memory arrays as they are."""
    out: dict[str, Images] = dict(parts)
    for split, images in parts.items():
        if isinstance(images, FileImageSet):
            ok = scan_images(list(images.paths), opts.on_bad_file, f"{name} ({split}) under {base}", opts.verify)
            out[split] = FileImageSet(images.paths[ok], images.labels[ok])
    return out
