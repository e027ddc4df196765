"""``dataset=folder``: researchers' own images in a folder tree, one sub-folder per class."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transferlab.data.fingerprint import fingerprint
from transferlab.data.scan import IMAGE_EXTENSIONS, SPLIT_NAMES, FileOptions, FileParts, is_unset, scanned_splits
from transferlab.data.splits import DatasetSplits
from transferlab.errors import ConfigError, DataError

_JUNK = {"thumbs.db", "desktop.ini"}


def _subdirs(folder: Path) -> list[Path]:
    """The visible sub-folders of ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(folder: Path, ignored: list[str]) -> list[str]:
    """Image files under ``folder`` (recursively), sorted by path so the order is the same everywhere."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.lower() in _JUNK:
                continue
            full = os.path.join(dirpath, name)
            (found if name.lower().endswith(IMAGE_EXTENSIONS) else ignored).append(full)
    return found


def _root_folder(root: str | None) -> Path:
    """``dataset.root`` as an existing folder."""
    if is_unset(root):
        raise ConfigError("dataset=folder needs dataset.root=DIR: a folder with one sub-folder of images per class.")
    base = Path(str(root)).expanduser().resolve()
    if not base.is_dir():
        raise DataError(
            f"dataset.root={root!r}: folder {base} does not exist{' (it is a file)' if base.exists() else ''}. "
            "Fix: point dataset.root at a folder laid out as ROOT/<class>/<image> or ROOT/train/<class>/<image>."
        )
    return base


def _layout(base: Path) -> dict[str, Path]:
    """The folder of each split present: ``train`` (``val``, ``test``) folders, else ``base`` itself as train."""
    top = _subdirs(base)
    split_dirs: dict[str, Path] = {}
    for split, names in SPLIT_NAMES.items():
        for d in top:
            if d.name.lower() in names:
                if split in split_dirs:
                    raise DataError(f"{base} has two {split} folders ({split_dirs[split].name}, {d.name}). Fix: keep one.")
                split_dirs[split] = d
    if not split_dirs:
        return {"train": base}
    if "train" not in split_dirs:
        raise DataError(
            f"{base} has {sorted(d.name for d in split_dirs.values())} folders but no train/ folder. "
            "Fix: add ROOT/train/<class>/…, or use one tree ROOT/<class>/… split by dataset.split_seed."
        )
    others = [d.name for d in top if d not in split_dirs.values()]
    if others:
        raise DataError(
            f"{base} mixes split folders ({', '.join(sorted(d.name for d in split_dirs.values()))}) with other "
            f"folders ({', '.join(others[:5])}). Fix: move the class folders into train/ (val/, test/), or remove "
            "the split folders and keep one tree ROOT/<class>/…"
        )
    return {split: split_dirs[split] for split in SPLIT_NAMES if split in split_dirs}


def _class_names(train: Path, classes: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The training folder's class folders, and the class names (``classes`` when given, in its order)."""
    train_classes = [d.name for d in _subdirs(train)]
    if not train_classes:
        loose = [p.name for p in train.iterdir() if p.is_file()][:3]
        raise DataError(
            f"{train} has no class folders{' (it holds files directly: ' + ', '.join(loose) + ')' if loose else ''}. "
            f"Fix: put each class's images in its own folder: {train}/<class>/<image>."
        )
    if classes is None:
        return train_classes, train_classes
    class_names = [str(c) for c in classes]
    extra = sorted(set(train_classes) - set(class_names))
    if extra:
        raise DataError(
            f"{train} has class folder(s) {extra[:8]} that are not in dataset.classes={class_names[:8]}. "
            "Fix: add them to dataset.classes, remove those folders, or set dataset.classes=null."
        )
    return train_classes, class_names


def _split_files(layout: dict[str, Path], class_names: list[str], ignored: list[str]) -> FileParts:
    """Each split's image files (sorted per class folder) and class indices; non-images go to ``ignored``."""
    index = {name: i for i, name in enumerate(class_names)}
    parts: FileParts = {}
    for split, folder in layout.items():
        paths: list[str] = []
        labels: list[int] = []
        for d in _subdirs(folder):
            if d.name not in index:
                raise DataError(
                    f"{d} is a class folder that {layout['train']} does not have. Fix: add {layout['train'] / d.name} "
                    "or remove this folder (every class must have training images)."
                )
            found = _images_under(d, ignored)
            if not found:
                raise DataError(
                    f"class folder {d} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)}). "
                    "Fix: add images to it, or remove the folder."
                )
            paths.extend(found)
            labels.extend([index[d.name]] * len(found))
        parts[split] = (paths, labels)
    return parts


def folder_splits(root: str | None = None, classes: Sequence[str] | None = None, **options: Any) -> DatasetSplits:
    """An image folder tree, one sub-folder per class.

    Either split folders ``root/train/<class>/…`` (with ``val`` (or ``valid``/``validation``) and ``test``;
    a missing one is taken from train by ``val_fraction``/``test_fraction``), or one tree
    ``root/<class>/…`` split by ``split_seed``. Class names are the folder names, sorted (or
    ``classes``, in its order). Images may sit in nested folders inside a class folder. ``options``:
    see ``FileOptions`` (other keys are ignored).
    """
    opts = FileOptions.of(options)
    base = _root_folder(root)
    layout = _layout(base)
    train_classes, class_names = _class_names(layout["train"], classes)
    ignored: list[str] = []
    parts = _split_files(layout, class_names, ignored)
    missing = [name for name in class_names if name not in train_classes]
    if missing:
        raise DataError(
            f"dataset.classes lists {missing[:8]} but {layout['train']} has no folder for them. "
            "Fix: add their folders, or drop them from dataset.classes."
        )
    if ignored:
        warnings.warn(
            f"dataset.root={root}: ignored {len(ignored)} file(s) that are not images by their ending "
            f"({', '.join(ignored[:3])}{'…' if len(ignored) > 3 else ''})",
            stacklevel=2,
        )
    return scanned_splits(parts, class_names, str(base), opts)


def folder_fingerprint(root: str | None = None, **_: Any) -> dict[str, Any]:
    """The image files the folder source would list, by class folder (``train/cat`` with split folders),
    stamped by path, size and modification time; no image is opened. A bad layout fails here, early."""
    base = _root_folder(root)
    classes = {str(d.relative_to(base)): _images_under(d, []) for folder in _layout(base).values() for d in _subdirs(folder)}
    return fingerprint("folder", classes, root=str(base))
