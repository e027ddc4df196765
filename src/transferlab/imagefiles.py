"""Researchers' own images: an image folder tree (``dataset=folder``) or a CSV / Parquet manifest
(``dataset=manifest``), scanned up front so a bad file fails with its name before anything trains."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from transferlab.data import DatasetSplits, FileImageSet, stratified_split
from transferlab.errors import ConfigError, DataError

#: file name endings read as images (case-insensitive); other files in class folders are ignored
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp")
#: folder names of the split layout ``root/train/<class>/…``; the first name is canonical
SPLIT_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
ON_BAD_FILE = ("error", "skip")
_JUNK = {"thumbs.db", "desktop.ini"}


def _unset(value: Any) -> bool:
    return value is None or str(value) in ("", "???", "null", "None")


def check_on_bad_file(value: Any) -> str:
    if value not in ON_BAD_FILE:
        raise ConfigError(f"dataset.on_bad_file={value!r} must be one of {list(ON_BAD_FILE)}.")
    return str(value)


# ---- the scan -------------------------------------------------------------------------------------
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
    return FileImageSet(np.asarray(list(paths), dtype=object), np.asarray(list(labels), dtype=np.int64))


def _carve(
    parts: dict[str, tuple[list[str], list[int]]], val_fraction: float, test_fraction: float, split_seed: int
) -> dict[str, tuple[list[str], list[int]]]:
    """Take the splits that are missing (val, test) from train, stratified and fixed by ``split_seed``."""
    need_val, need_test = "val" not in parts, "test" not in parts
    if not (need_val or need_test):
        return parts
    paths, labels = parts["train"]
    arr = np.asarray(labels, dtype=np.int64)
    tr, va, te = stratified_split(arr, val_fraction if need_val else 0.0, test_fraction if need_test else 0.0, split_seed)
    out = dict(parts)
    out["train"] = ([paths[i] for i in tr], [labels[i] for i in tr])
    if need_val:
        out["val"] = ([paths[i] for i in va], [labels[i] for i in va])
    if need_test:
        out["test"] = ([paths[i] for i in te], [labels[i] for i in te])
    return out


def _finish(
    parts: dict[str, tuple[list[str], list[int]]],
    class_names: list[str],
    on_bad_file: str,
    where: str,
    verify: bool,
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
) -> DatasetSplits:
    """Scan every file (dropping bad ones in skip mode), then fill in missing splits."""
    everything = [p for paths, _ in parts.values() for p in paths]
    ok = dict(zip(everything, scan_images(everything, on_bad_file, where, verify)))
    kept = {
        split: ([p for p in paths if ok[p]], [lab for p, lab in zip(paths, labels) if ok[p]])
        for split, (paths, labels) in parts.items()
    }
    kept = _carve(kept, val_fraction, test_fraction, split_seed)
    sets = {split: _file_set(*kept[split]) for split in ("train", "val", "test")}
    return DatasetSplits(sets["train"], sets["val"], sets["test"], class_names)


# ---- dataset=folder ---------------------------------------------------------------------------------
def _subdirs(folder: Path) -> list[Path]:
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


def folder_splits(
    root: str | None = None,
    classes: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    on_bad_file: str = "error",
    verify: bool = True,
    **_: Any,
) -> DatasetSplits:
    """An image folder tree, one sub-folder per class.

    Either split folders ``root/train/<class>/…`` (with ``val`` (or ``valid``/``validation``) and ``test``;
    a missing one is taken from train by ``val_fraction``/``test_fraction``), or one tree
    ``root/<class>/…`` split by ``split_seed``. Class names are the folder names, sorted (or
    ``classes``, in its order). Images may sit in nested folders inside a class folder.
    """
    on_bad_file = check_on_bad_file(on_bad_file)
    if _unset(root):
        raise ConfigError("dataset=folder needs dataset.root=DIR: a folder with one sub-folder of images per class.")
    base = Path(str(root)).expanduser().resolve()
    if not base.is_dir():
        raise DataError(
            f"dataset.root={root!r}: folder {base} does not exist{' (it is a file)' if base.exists() else ''}. "
            "Fix: point dataset.root at a folder laid out as ROOT/<class>/<image> or ROOT/train/<class>/<image>."
        )
    top = _subdirs(base)
    split_dirs: dict[str, Path] = {}
    for split, names in SPLIT_NAMES.items():
        for d in top:
            if d.name.lower() in names:
                if split in split_dirs:
                    raise DataError(f"{base} has two {split} folders ({split_dirs[split].name}, {d.name}). Fix: keep one.")
                split_dirs[split] = d
    if split_dirs:
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
        layout = {split: split_dirs[split] for split in SPLIT_NAMES if split in split_dirs}
    else:
        layout = {"train": base}

    train_classes = [d.name for d in _subdirs(layout["train"])]
    if not train_classes:
        loose = [p.name for p in layout["train"].iterdir() if p.is_file()][:3]
        raise DataError(
            f"{layout['train']} has no class folders{' (it holds files directly: ' + ', '.join(loose) + ')' if loose else ''}. "
            f"Fix: put each class's images in its own folder: {layout['train']}/<class>/<image>."
        )
    if classes is not None:
        class_names = [str(c) for c in classes]
        extra = sorted(set(train_classes) - set(class_names))
        if extra:
            raise DataError(
                f"{layout['train']} has class folder(s) {extra[:8]} that are not in dataset.classes={class_names[:8]}. "
                "Fix: add them to dataset.classes, remove those folders, or set dataset.classes=null."
            )
    else:
        class_names = train_classes
    index = {name: i for i, name in enumerate(class_names)}

    ignored: list[str] = []
    parts: dict[str, tuple[list[str], list[int]]] = {}
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
    return _finish(parts, class_names, on_bad_file, str(base), verify, val_fraction, test_fraction, split_seed)


# ---- dataset=manifest -------------------------------------------------------------------------------
def _read_table(path: Path) -> Any:
    """The manifest as a table of strings (labels like ``007`` stay as written)."""
    import pandas as pd

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, skipinitialspace=True)
    except ImportError as err:
        raise DataError(
            f"dataset.path={str(path)!r}: reading Parquet needs pyarrow (or fastparquet), which is not installed. "
            "Fix: `pip install pyarrow`, or save the manifest as CSV."
        ) from err
    except Exception as err:  # noqa: BLE001 - pandas raises many types; all mean an unreadable file
        raise DataError(f"dataset.path={str(path)!r}: cannot read the manifest ({type(err).__name__}: {err}).") from err
    table.columns = [str(c).strip().lower() for c in table.columns]
    for col in table.columns:
        values = table[col]
        if pd.api.types.is_float_dtype(values) and values.dropna().mod(1).eq(0).all():
            values = values.astype("Int64")  # Parquet integer labels with gaps read as floats
        table[col] = values.astype("string").str.strip().astype(object).where(values.notna(), None)
    return table


def _rows(mask: np.ndarray, table: Any, limit: int = 3) -> str:
    """Some manifest rows (1-based, after the header line) for a message."""
    rows = np.flatnonzero(mask)[:limit]
    return ", ".join(f"row {int(r) + 2}: {table.iloc[int(r)].to_dict()}" for r in rows)


def manifest_splits(
    path: str | None = None,
    classes: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    on_bad_file: str = "error",
    verify: bool = True,
    **_: Any,
) -> DatasetSplits:
    """Images listed in a CSV (or Parquet) file with columns ``path``, ``label`` and optionally ``split``.

    Relative paths are resolved against the manifest's folder. ``label`` is a class name, or an integer:
    an index into ``classes`` when it is given, else the class named by that number. ``split`` is
    train / val / test (valid, validation); splits absent from it (or the whole column) are taken from
    train, stratified by ``split_seed``. Class names are ``classes`` (in its order), else the labels sorted.
    """
    on_bad_file = check_on_bad_file(on_bad_file)
    if _unset(path):
        raise ConfigError("dataset=manifest needs dataset.path=FILE: a CSV or Parquet file with columns path, label[, split].")
    file = Path(str(path)).expanduser().resolve()
    if not file.is_file():
        raise DataError(f"dataset.path={path!r}: manifest {file} does not exist. Fix: give the path of a CSV or Parquet file.")
    table = _read_table(file)
    missing_cols = [c for c in ("path", "label") if c not in table.columns]
    if missing_cols:
        raise DataError(
            f"manifest {file} lacks column(s) {missing_cols}; it has {list(table.columns)[:10]}. "
            "Fix: name the columns path (image file, absolute or relative to the manifest's folder), "
            "label (class name or integer) and optionally split (train/val/test)."
        )
    if len(table) == 0:
        raise DataError(f"manifest {file} has no rows. Fix: list one image per row (path, label[, split]).")
    for col in ["path", "label"] + (["split"] if "split" in table.columns else []):
        empty = table[col].isna().to_numpy() | (table[col].astype(str) == "").to_numpy()
        if empty.any():
            raise DataError(
                f"manifest {file}: {int(empty.sum())} row(s) have no {col} ({_rows(empty, table)}). "
                f"Fix: fill in the {col} column, or delete those rows."
            )

    labels, class_names = _manifest_labels(table, classes, file)

    if "split" in table.columns:
        alias = {name: split for split, names in SPLIT_NAMES.items() for name in names}
        raw = table["split"].astype(str).str.lower()
        unknown = sorted(set(raw) - set(alias))
        if unknown:
            raise DataError(
                f"manifest {file}: split value(s) {unknown[:5]} are not train / val / test "
                f"({_rows(raw.isin(unknown).to_numpy(), table)}). Fix: use train, val (or valid, validation) or test."
            )
        splits = raw.map(alias).to_numpy()
    else:
        splits = np.full(len(table), "train", dtype=object)

    base = file.parent
    paths = [
        str(Path(os.path.expanduser(p)) if os.path.isabs(os.path.expanduser(p)) else (base / p).resolve())
        for p in table["path"].astype(str)
    ]
    seen: dict[str, str] = {}
    leaks = 0
    for p, s in zip(paths, splits):
        if seen.setdefault(p, s) != s:
            leaks += 1
    if leaks:
        warnings.warn(f"manifest {file}: {leaks} file(s) appear in more than one split (train/val/test overlap)", stacklevel=2)
    parts: dict[str, tuple[list[str], list[int]]] = {}
    for split in SPLIT_NAMES:
        rows = np.flatnonzero(splits == split)
        if len(rows):
            parts[split] = ([paths[i] for i in rows], [int(labels[i]) for i in rows])
    if "train" not in parts:
        raise DataError(f"manifest {file}: no row has split=train. Fix: mark the training rows split=train.")
    where = f"manifest {file} (relative paths resolve against {base})"
    return _finish(parts, class_names, on_bad_file, where, verify, val_fraction, test_fraction, split_seed)


def _manifest_labels(table: Any, classes: Sequence[str] | None, file: Path) -> tuple[np.ndarray, list[str]]:
    """Class indices per row and the class names.

    With ``classes``: labels are its names, or (when not all are) integers indexing it. Without: all-integer
    labels name classes by number (sorted); any other labels are class names (sorted).
    """
    names = table["label"].astype(str)
    integer = bool(names.str.fullmatch(r"[+-]?\d+").all())
    if classes is not None:
        class_names = [str(c) for c in classes]
        if len(set(class_names)) != len(class_names):
            raise ConfigError(f"dataset.classes={class_names[:8]} names a class twice. Fix: list each class once.")
        index = {name: i for i, name in enumerate(class_names)}
        if names.isin(index).all():
            return names.map(index).to_numpy(dtype=np.int64), class_names
        if integer:
            values = names.astype(np.int64).to_numpy()
            bad = (values < 0) | (values >= len(class_names))
            hint = f"integer labels index dataset.classes, so they must be 0…{len(class_names) - 1}"
        else:
            bad = ~names.isin(index).to_numpy()
            hint = f"unknown: {sorted(set(names[bad]))[:8]}"
        if bad.any():
            raise DataError(
                f"manifest {file}: {int(bad.sum())} row(s) have labels that are not in dataset.classes="
                f"{class_names[:8]} ({hint}; {_rows(bad, table)}). Fix: correct those labels, or add the classes "
                "to dataset.classes (or set dataset.classes=null to take the classes from the manifest)."
            )
        return values, class_names
    if integer:
        values = names.astype(np.int64).to_numpy()
        uniq = np.unique(values)
        if not np.array_equal(uniq, np.arange(len(uniq))):
            warnings.warn(
                f"manifest {file}: integer labels {uniq[:8].tolist()} are not 0…{len(uniq) - 1}; classes are "
                "numbered in sorted order. Set dataset.classes to fix names and order.",
                stacklevel=3,
            )
        return np.searchsorted(uniq, values).astype(np.int64), [str(int(v)) for v in uniq]
    class_names = sorted(set(names))
    index = {name: i for i, name in enumerate(class_names)}
    return names.map(index).to_numpy(dtype=np.int64), class_names
