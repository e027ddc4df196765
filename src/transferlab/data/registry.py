"""The dataset sources by ``dataset.kind``: each one's loader and its fingerprint, registered together;
``load_splits`` (a dataset config's checked splits) and ``data_fingerprint`` (its identity, cheap)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from transferlab.config.datasets import DatasetConfig
from transferlab.data.splits import DatasetSplits
from transferlab.errors import DataError

#: where a dataset kind's classes come from, and how to give it more (for the one-class message)
_CLASS_SOURCES: dict[str, tuple[str, str]] = {
    "folder": ("the folder dataset.root={root}", "add a sub-folder of images per class under {root} (ROOT/<class>/<image>)"),
    "manifest": ("the manifest dataset.path={path}", "give the rows of {path} labels of 2 or more classes"),
    "digits": ("dataset.labels={labels}", "dataset.labels=[5,6,7,8,9] (two or more digits), or null for all ten"),
}


def _one_class_error(kind: str, dataset_cfg: Mapping[str, Any], names: list[str]) -> DataError:
    where, fix = _CLASS_SOURCES.get(kind, (f"dataset {kind!r}", "give it data of 2 or more classes"))
    return DataError(f"{where.format(**dataset_cfg)} has {len(names)} class {names}; a classifier needs at least 2. "
                     f"Fix: {fix.format(**dataset_cfg)}.")


def data_fingerprint(dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The identity of a ``dataset`` config's data, taken without loading it (see ``data.fingerprint``)."""
    return DatasetConfig.variant(dataset_cfg, "dataset").fingerprint(**dataset_cfg)


def load_splits(dataset_cfg: Mapping[str, Any]) -> DatasetSplits:
    """Build the splits for a ``dataset`` config and check ``num_classes`` and ``classes`` against the data.

    ``dataset.num_classes: null`` takes the class count from the data (``len(splits.class_names)``).
    """
    kind = dataset_cfg.get("kind", dataset_cfg.get("name"))
    splits = DatasetConfig.variant(dataset_cfg, "dataset").builder(**dataset_cfg)
    if len(splits.class_names) < 2:
        raise _one_class_error(str(kind), dataset_cfg, list(splits.class_names))
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
