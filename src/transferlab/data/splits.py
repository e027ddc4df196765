"""A dataset's fixed train / val / test splits, and the nested stratified subsets runs train on.

Every source builds a ``DatasetSplits``; nothing here knows any source. The splits are fixed by
``dataset.split_seed``; the training subset is a draw from the training split, made by the run's
``subset_seed`` (``dataset.subset_seed``, or the run's ``seed`` when null: a seed is a draw).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from transferlab.data.fingerprint import stat_stamp
from transferlab.errors import ConfigError, DataError
from transferlab.record import DataSize


@dataclass
class ImageSet:
    """Labelled images held in memory as a uint8 array (N, H, W) or (N, H, W, C)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])

    def subset(self, idx: np.ndarray) -> ImageSet:
        """The examples at ``idx``, in that order."""
        return ImageSet(self.images[idx], self.labels[idx])

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

    def subset(self, idx: np.ndarray) -> FileImageSet:
        """The examples at ``idx``, in that order."""
        return FileImageSet(self.paths[idx], self.labels[idx])

    def fingerprint(self) -> str:
        """SHA-256 over each file's stamp (``data.fingerprint.stat_stamp``: path, size, modification time; not
        the bytes: cheap) and label."""
        h = hashlib.sha256()
        for path, label in zip(self.paths, self.labels):
            h.update(f"{stat_stamp(str(path))[0]}\t{int(label)}\n".encode())
        return h.hexdigest()


class Images(Protocol):
    """What a split is: labels, a length, and ``load(i)`` giving a PIL image."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def load(self, index: int) -> Image.Image: ...

    def subset(self, idx: np.ndarray) -> Images: ...

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


def split_in_memory(images: np.ndarray, labels: np.ndarray, class_names: list[str], val_fraction: float,
                    test_fraction: float, split_seed: int) -> DatasetSplits:
    """In-memory images split into train / val / test by ``stratified_split``."""
    everything = ImageSet(images, labels)
    tr, va, te = stratified_split(labels, val_fraction, test_fraction, split_seed)
    return DatasetSplits(everything.subset(tr), everything.subset(va), everything.subset(te), class_names)


def carve_missing(parts: dict[str, Images], val_fraction: float, test_fraction: float,
                  split_seed: int) -> dict[str, Images]:
    """Take the splits that are missing (val, test) from train, stratified and fixed by ``split_seed``."""
    need_val, need_test = "val" not in parts, "test" not in parts
    if not (need_val or need_test):
        return parts
    train = parts["train"]
    labels = np.asarray(train.labels, dtype=np.int64)
    tr, va, te = stratified_split(labels, val_fraction if need_val else 0.0, test_fraction if need_test else 0.0, split_seed)
    out = dict(parts)
    out["train"] = train.subset(tr)
    if need_val:
        out["val"] = train.subset(va)
    if need_test:
        out["test"] = train.subset(te)
    return out


def subset_seed(dataset_cfg: Mapping[str, Any], seed: int) -> int:
    """The seed that draws a run's training subset: ``dataset.subset_seed``, or the run's ``seed`` when it is
    null (the default), so that every seed trains on its own draw and every strategy at a seed on the same one."""
    fixed = dataset_cfg.get("subset_seed")
    return int(seed) if fixed is None else int(fixed)


def draw_id(indices: np.ndarray) -> str:
    """The name of a draw: the first 12 hex digits of SHA-256 over its training indices (sorted, int64)."""
    idx = np.sort(np.asarray(indices, dtype=np.int64))
    return hashlib.sha256(idx.tobytes()).hexdigest()[:12]


def train_selection(splits: DatasetSplits, indices: np.ndarray, dataset_cfg: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The record of a run's exact training examples (``train_indices.json``).

    ``indices`` index the training split (fixed by ``dataset.split_seed``) and were drawn by ``seed`` (the
    run's :func:`subset_seed`); ``draw`` names them (:func:`draw_id`). File-backed data adds each example's
    file path, so a result can be traced to its images.
    """
    idx = np.asarray(indices, dtype=np.int64)
    record: dict[str, Any] = {
        "dataset": dataset_cfg.get("name"),
        "kind": dataset_cfg.get("kind"),
        "split_seed": dataset_cfg.get("split_seed"),
        "subset_seed": int(seed),
        "draw": draw_id(idx),
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


def _check_size(classes: np.ndarray, counts: np.ndarray, names: list[str], size: DataSize,
                fraction: float | None, per_class: int | None) -> None:
    """Raise when the asked-for ``size`` cannot give a subset (messages quote the config's values)."""
    if size.kind == "per_class":
        if size.per_class < 1:  # type: ignore[operator]
            raise ConfigError(f"dataset.per_class={per_class} must be ≥ 1, or null to use dataset.fraction.")
        smallest = int(counts.min())
        if size.per_class > smallest:  # type: ignore[operator]
            cls = names[int(classes[counts.argmin()])]
            raise DataError(
                f"dataset.per_class={per_class} but class {cls!r} has only {smallest} training examples. "
                f"Fix: use dataset.per_class ≤ {smallest}, or dataset.fraction."
            )
    elif fraction is None or not 0 < size.value <= 1:
        raise ConfigError(
            f"dataset.fraction={fraction} must be in (0, 1] (e.g. 0.1 for 10 % of the training split)."
        )


def subsample(labels: np.ndarray, fraction: float | None = 1.0, per_class: int | None = None, seed: int = 0,
              class_names: list[str] | None = None) -> np.ndarray:
    """Indices of a stratified, nested subset of ``labels``.

    Each class keeps ``round(fraction × its size)`` examples (or ``per_class``, which wins: see
    ``record.DataSize``), always the first ones of a per-class permutation fixed by ``seed`` (a run's
    :func:`subset_seed`): for one seed the 5 % subset lies inside the 10 % subset; another seed draws
    other examples.
    """
    classes, counts = np.unique(labels, return_counts=True)
    names = class_names or [str(c) for c in range(int(classes.max()) + 1)]
    size = DataSize.of(fraction, None if per_class is None else int(per_class))
    _check_size(classes, counts, names, size, fraction, per_class)
    chosen: list[np.ndarray] = []
    for cls, count in zip(classes, counts):
        k = size.per_class if size.kind == "per_class" else int(math.floor(size.value * count + 0.5))
        if k == 0:
            raise DataError(
                f"dataset.fraction={fraction} leaves class {names[int(cls)]!r} ({count} training examples) "
                f"with no example. Fix: use dataset.fraction ≥ {1.0 / count:.4g}, or dataset.per_class=1."
            )
        idx = np.flatnonzero(labels == cls)
        order = np.random.default_rng([int(seed), int(cls)]).permutation(len(idx))
        chosen.append(idx[order[:k]])
    return np.sort(np.concatenate(chosen))
