"""The up-front scan of image files (folder, manifest and torchvision sources): a bad file fails with its
name, or is left out, before anything trains."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from transferlab.data.splits import DatasetSplits, FileImageSet, Images, carve_missing
from transferlab.errors import ConfigError, DataError

#: file name endings read as images (case-insensitive); other files in class folders are ignored
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp")
#: split names of a folder layout ``root/train/<class>/…`` or a manifest's ``split`` column; the first is canonical
SPLIT_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
ON_BAD_FILE = ("error", "skip")

#: a split's image files and their class indices, before the scan
FileParts = dict[str, tuple[list[str], list[int]]]


def is_unset(value: Any) -> bool:
    """Whether a config value is missing (null, empty, or Hydra's ``???``)."""
    return value is None or str(value) in ("", "???", "null", "None")


def check_on_bad_file(value: Any) -> str:
    """``dataset.on_bad_file``, checked."""
    if value not in ON_BAD_FILE:
        raise ConfigError(f"dataset.on_bad_file={value!r} must be one of {list(ON_BAD_FILE)}.")
    return str(value)


@dataclass(frozen=True)
class FileOptions:
    """The dataset keys every file-backed source takes: how bad files are handled and missing splits carved."""

    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    on_bad_file: str = "error"
    verify: bool = True

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> FileOptions:
        """The options among a source's keyword arguments (others are ignored), ``on_bad_file`` checked."""
        known = {f.name for f in dataclasses.fields(cls)}
        opts = cls(**{k: v for k, v in options.items() if k in known})
        check_on_bad_file(opts.on_bad_file)
        return opts


def check_image(path: str) -> str | None:
    """None when ``path`` decodes as an image, else the reason it does not.

    Cheap but real: PNG chunks are verified (CRC and completeness), JPEGs decoded at reduced size
    (catches truncation), other formats decoded in full.
    """
    try:
        with Image.open(path) as img:
            if img.format == "PNG":
                img.verify()
            else:
                if img.format == "JPEG":
                    img.draft(img.mode, (1, 1))
                img.load()
    except FileNotFoundError:
        return "file not found"
    except Exception as err:  # noqa: BLE001 - every failure is a reason to report
        return f"{type(err).__name__}: {err}"
    return None


def scan_images(paths: Sequence[str], on_bad_file: str, where: str, verify: bool = True) -> np.ndarray:
    """A mask of the readable files among ``paths``.

    ``on_bad_file='error'`` raises a DataError naming the bad files and the fix; ``'skip'`` warns with
    their count and leaves them out. ``verify=False`` only checks that the files exist.
    """
    if verify:
        workers = min(8, (os.cpu_count() or 1) * 2)
        with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without the GIL
            reasons = list(pool.map(check_image, paths, chunksize=64))
    else:
        reasons = [None if os.path.isfile(p) else "file not found" for p in paths]
    bad = [(p, r) for p, r in zip(paths, reasons) if r is not None]
    if not bad:
        return np.ones(len(paths), dtype=bool)
    listing = "; ".join(f"{p} ({r})" for p, r in bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
    if on_bad_file == "error":
        raise DataError(
            f"{len(bad)} of {len(paths)} image files in {where} cannot be read: {listing}. Fix: replace or delete "
            "these files (or correct their paths), or set dataset.on_bad_file=skip to leave them out."
        )
    warnings.warn(f"dataset: skipped {len(bad)} unreadable image file(s) of {len(paths)} in {where}: {listing}", stacklevel=2)
    return np.asarray([r is None for r in reasons], dtype=bool)


def _file_set(paths: Sequence[str], labels: Iterable[int]) -> FileImageSet:
    """A FileImageSet of ``paths`` and their class indices."""
    return FileImageSet(np.asarray(list(paths), dtype=object), np.asarray(list(labels), dtype=np.int64))


def scanned_splits(parts: FileParts, class_names: list[str], where: str, opts: FileOptions) -> DatasetSplits:
    """Scan every file (dropping bad ones in skip mode), then fill in missing splits."""
    everything = [p for paths, _ in parts.values() for p in paths]
    ok = dict(zip(everything, scan_images(everything, opts.on_bad_file, where, opts.verify)))
    kept: dict[str, Images] = {
        split: _file_set([p for p in paths if ok[p]], [lab for p, lab in zip(paths, labels) if ok[p]])
        for split, (paths, labels) in parts.items()
    }
    sets = carve_missing(kept, opts.val_fraction, opts.test_fraction, opts.split_seed)
    return DatasetSplits(sets["train"], sets["val"], sets["test"], class_names)
