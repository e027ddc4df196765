"""The dataset sources by ``dataset.kind``: each one's loader and its fingerprint, registered together;
``load_splits`` (a dataset config's checked splits) and ``data_fingerprint`` (its identity, cheap)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferlab.data.digits import digits_fingerprint, digits_splits
from transferlab.data.folder import folder_fingerprint, folder_splits
from transferlab.data.glyphs import glyph_fingerprint, glyph_splits
from transferlab.data.manifest import manifest_fingerprint, manifest_splits
from transferlab.data.splits import DatasetSplits
from transferlab.data.torchvision_sets import torchvision_fingerprint, torchvision_splits
from transferlab.errors import ConfigError, DataError


@dataclass(frozen=True)
class Source:
    """A dataset source. Both take the dataset config's keys as arguments: ``splits`` loads the data,
    ``fingerprint`` names it without loading (``data.fingerprint``: names, versions and file stamps)."""

    splits: Callable[..., DatasetSplits]
    fingerprint: Callable[..., dict[str, Any]]


#: dataset sources by ``dataset.kind``
DATASETS: dict[str, Source] = {
    "digits": Source(digits_splits, digits_fingerprint),
    "glyphs": Source(glyph_splits, glyph_fingerprint),
    "folder": Source(folder_splits, folder_fingerprint),
    "manifest": Source(manifest_splits, manifest_fingerprint),
    "torchvision": Source(torchvision_splits, torchvision_fingerprint),
}


def source_of(dataset_cfg: Mapping[str, Any]) -> Source:
    """The source of a ``dataset`` config (``dataset.kind``, else its name)."""
    kind = dataset_cfg.get("kind", dataset_cfg.get("name"))
    if kind not in DATASETS:
        raise ConfigError(f"dataset.kind={kind!r} is unknown; choose one of {sorted(DATASETS)}.")
    return DATASETS[kind]


def data_fingerprint(dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The identity of a ``dataset`` config's data, taken without loading it (see ``data.fingerprint``)."""
    return source_of(dataset_cfg).fingerprint(**dataset_cfg)


def load_splits(dataset_cfg: Mapping[str, Any]) -> DatasetSplits:
    """Build the splits for a ``dataset`` config and check ``num_classes`` and ``classes`` against the data.

    ``dataset.num_classes: null`` takes the class count from the data (``len(splits.class_names)``).
    """
    kind = dataset_cfg.get("kind", dataset_cfg.get("name"))
    splits = source_of(dataset_cfg).splits(**dataset_cfg)
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
