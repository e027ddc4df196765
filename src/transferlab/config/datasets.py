"""The ``dataset`` group's schema: the keys every kind has, and each kind's own (``DATASET_KINDS``).

``dataset.kind`` picks the class (``DatasetConfig.variant``); the class names the function that builds the
kind's splits. Adding a kind: one class here (its keys) and one ``conf/dataset/NAME.yaml`` (their defaults).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from transferlab.config.typed import example, shown
from transferlab.data.digits import digits_fingerprint, digits_splits
from transferlab.data.folder import folder_fingerprint, folder_splits
from transferlab.data.glyphs import glyph_fingerprint, glyph_splits
from transferlab.data.manifest import manifest_fingerprint, manifest_splits
from transferlab.data.scan import check_on_bad_file
from transferlab.data.splits import DatasetSplits
from transferlab.data.torchvision_sets import torchvision_fingerprint, torchvision_splits
from transferlab.errors import ConfigError


@dataclass(kw_only=True)
class DatasetConfig:
    """The keys of every dataset kind (``conf/dataset/*.yaml`` explains each)."""

    builder: ClassVar[Callable[..., DatasetSplits]]  # loads the splits, from the config's keys
    # names the data without loading it, from the config's keys (``data.fingerprint``: names, versions, file stamps)
    fingerprint: ClassVar[Callable[..., dict[str, Any]]]
    what: ClassVar[str] = "dataset"  # in messages about its keys
    name: str
    kind: str
    num_classes: int | None = example(10, None)  # null: from the data
    classes: list[str] | None = None
    input_size: int | None = example(32, None)  # pixels; null: the backbone's own
    crop_pct: float | None = example(1.0, None)
    fraction: float | None = 1.0
    per_class: int | None = example(5, None)
    split_seed: int = 0
    subset_seed: int | None = example(0, None)  # draws the training subset; null: the run's seed (a seed is a draw)
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    batch_size: int = 64
    num_workers: Literal["auto"] | int | None = "auto"
    pin_memory: Literal["auto"] | bool | None = "auto"
    persistent_workers: Literal["auto"] | bool | None = "auto"
    preload: bool = False
    augment: dict[str, Any] | None = example({"hflip": 0.5}, None)  # timm create_transform options
    mixup: dict[str, Any] | None = example({"mixup_alpha": 0.2}, None)  # timm Mixup options

    @classmethod
    def variant(cls, node: Mapping[str, Any], key: str) -> type[DatasetConfig]:
        """The class of ``node``'s ``kind`` (its ``name`` when it has none)."""
        kind = node.get("kind", node.get("name"))
        if kind not in DATASET_KINDS:
            raise ConfigError(f"{key}.kind={shown(kind)} is unknown; choose one of {sorted(DATASET_KINDS)} "
                              "(or a config: dataset=digits|folder|manifest|cifar10…).")
        return DATASET_KINDS[str(kind)]

    def check(self, key: str) -> None:
        """Values each key's type allows but a run cannot use."""
        if self.per_class is not None and self.fraction not in (None, 1.0):
            raise ConfigError(
                f"{key}.fraction={self.fraction} and {key}.per_class={self.per_class} both set the training-set size "
                f"(per_class would win). Fix: keep one: {key}.per_class=null for the fraction, or {key}.fraction=1.0 "
                f"for {self.per_class} per class."
            )
        if self.input_size is not None and self.input_size < 1:
            raise ConfigError(f"{key}.input_size={self.input_size} pixels cannot hold an image. "
                              f"Fix: {key}.input_size=32, or null for the backbone's own size.")
        if self.num_classes is not None and self.num_classes < 2:
            raise ConfigError(f"{key}.num_classes={self.num_classes}: a classifier needs at least 2 classes. "
                              f"Fix: {key}.num_classes=null (the count of the data's classes).")
        if self.batch_size < 1:
            raise ConfigError(f"{key}.batch_size={self.batch_size} must be ≥ 1. Fix: {key}.batch_size=64")


@dataclass(kw_only=True)
class DigitsConfig(DatasetConfig):
    """scikit-learn's handwritten digits."""

    what = "dataset kind digits"
    builder = staticmethod(digits_splits)
    fingerprint = staticmethod(digits_fingerprint)
    labels: list[int] | None = example([5, 6, 7, 8, 9], None)  # keep only these digits


@dataclass(kw_only=True)
class GlyphsConfig(DatasetConfig):
    """Procedurally rendered stroke glyphs (the embedded source task)."""

    what = "dataset kind glyphs"
    builder = staticmethod(glyph_splits)
    fingerprint = staticmethod(glyph_fingerprint)
    examples_per_class: int = 60
    render_size: int = 32
    glyph_seed: int = 0


@dataclass(kw_only=True)
class FileDatasetConfig(DatasetConfig):
    """The keys of the kinds that read image files."""

    on_bad_file: str = "error"  # error | skip
    verify: bool = True

    def check(self, key: str) -> None:
        super().check(key)
        check_on_bad_file(self.on_bad_file)


@dataclass(kw_only=True)
class FolderConfig(FileDatasetConfig):
    """Images in a folder tree, one sub-folder per class."""

    what = "dataset kind folder"
    builder = staticmethod(folder_splits)
    fingerprint = staticmethod(folder_fingerprint)
    root: str | None = example("/data/my_images", None)


@dataclass(kw_only=True)
class ManifestConfig(FileDatasetConfig):
    """Images listed in a CSV or Parquet manifest."""

    what = "dataset kind manifest"
    builder = staticmethod(manifest_splits)
    fingerprint = staticmethod(manifest_fingerprint)
    path: str | None = example("/data/labels.csv", None)


@dataclass(kw_only=True)
class TorchvisionConfig(FileDatasetConfig):
    """A torchvision dataset by class name."""

    what = "dataset kind torchvision"
    builder = staticmethod(torchvision_splits)
    fingerprint = staticmethod(torchvision_fingerprint)
    tv_name: str = "CIFAR10"
    root: str | None = example("data", None)
    download: bool = True


#: the dataset kinds, by ``dataset.kind``
DATASET_KINDS: dict[str, type[DatasetConfig]] = {
    "digits": DigitsConfig,
    "glyphs": GlyphsConfig,
    "folder": FolderConfig,
    "manifest": ManifestConfig,
    "torchvision": TorchvisionConfig,
}
