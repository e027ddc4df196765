"""``dataset=manifest``: researchers' own images listed in a CSV / Parquet file (path, label[, split])."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.data.fingerprint import fingerprint
from transferlab.data.scan import SPLIT_NAMES, FileOptions, FileParts, is_unset, scanned_splits
from transferlab.data.splits import DatasetSplits
from transferlab.errors import ConfigError, DataError


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


def _manifest_file(path: str | None) -> Path:
    """``dataset.path`` as an existing file."""
    if is_unset(path):
        raise ConfigError("dataset=manifest needs dataset.path=FILE: a CSV or Parquet file with columns path, label[, split].")
    file = Path(str(path)).expanduser().resolve()
    if not file.is_file():
        raise DataError(f"dataset.path={path!r}: manifest {file} does not exist. Fix: give the path of a CSV or Parquet file.")
    return file


def _checked_table(file: Path) -> Any:
    """The manifest's rows, with columns ``path`` and ``label`` (and ``split``, if any) filled in on every row."""
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
    return table


def _row_splits(table: Any, file: Path) -> np.ndarray:
    """Each row's split (train / val / test): its ``split`` value, or train when there is no such column."""
    if "split" not in table.columns:
        return np.full(len(table), "train", dtype=object)
    alias = {name: split for split, names in SPLIT_NAMES.items() for name in names}
    raw = table["split"].astype(str).str.lower()
    unknown = sorted(set(raw) - set(alias))
    if unknown:
        raise DataError(
            f"manifest {file}: split value(s) {unknown[:5]} are not train / val / test "
            f"({_rows(raw.isin(unknown).to_numpy(), table)}). Fix: use train, val (or valid, validation) or test."
        )
    return raw.map(alias).to_numpy()


def _row_paths(table: Any, base: Path) -> list[str]:
    """Each row's image path: absolute as written, or resolved against ``base`` (the manifest's folder)."""
    return [
        str(Path(os.path.expanduser(p)) if os.path.isabs(os.path.expanduser(p)) else (base / p).resolve())
        for p in table["path"].astype(str)
    ]


def _check_duplicates(paths: list[str], splits: np.ndarray, labels: np.ndarray, file: Path) -> None:
    """An image listed twice in one split: with two labels a DataError, else a warning (each copy trains)."""
    rows: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(paths, splits)):
        rows.setdefault(key, []).append(i)
    repeated = {key: r for key, r in rows.items() if len(r) > 1}
    if not repeated:
        return
    conflicting = [(key, r) for key, r in repeated.items() if len({int(labels[i]) for i in r}) > 1]
    (path, split), at = (conflicting or list(repeated.items()))[0]
    example = f"{path} in {split} at rows {[i + 2 for i in at][:5]}"
    if conflicting:
        raise DataError(f"manifest {file}: {len(conflicting)} image(s) have two labels in one split (e.g. {example}). "
                        "Fix: keep one row per image, with its right label.")
    extra = sum(len(r) - 1 for r in repeated.values())
    warnings.warn(f"manifest {file}: {extra} duplicate row(s) list an image again in the same split (e.g. {example}); "
                  "every copy is used, so those images count more. Fix: remove the duplicate rows.", stacklevel=4)


def _split_files(paths: list[str], splits: np.ndarray, labels: np.ndarray, file: Path) -> FileParts:
    """Each split's files and class indices; warns when a file is in more than one split, or twice in one."""
    _check_duplicates(paths, splits, labels, file)
    seen: dict[str, str] = {}
    leaks = 0
    for p, s in zip(paths, splits):
        if seen.setdefault(p, s) != s:
            leaks += 1
    if leaks:
        warnings.warn(f"manifest {file}: {leaks} file(s) appear in more than one split (train/val/test overlap)", stacklevel=3)
    parts: FileParts = {}
    for split in SPLIT_NAMES:
        rows = np.flatnonzero(splits == split)
        if len(rows):
            parts[split] = ([paths[i] for i in rows], [int(labels[i]) for i in rows])
    if "train" not in parts:
        raise DataError(f"manifest {file}: no row has split=train. Fix: mark the training rows split=train.")
    return parts


def manifest_splits(path: str | None = None, classes: Sequence[str] | None = None, **options: Any) -> DatasetSplits:
    """Images listed in a CSV (or Parquet) file with columns ``path``, ``label`` and optionally ``split``.

    Relative paths are resolved against the manifest's folder. ``label`` is a class name, or an integer:
    an index into ``classes`` when it is given, else the class named by that number. ``split`` is
    train / val / test (valid, validation); splits absent from it (or the whole column) are taken from
    train, stratified by ``split_seed``. Class names are ``classes`` (in its order), else the labels sorted.
    ``options``: see ``FileOptions`` (other keys are ignored).
    """
    opts = FileOptions.of(options)
    file = _manifest_file(path)
    table = _checked_table(file)
    labels, class_names = _manifest_labels(table, classes, file)
    splits = _row_splits(table, file)
    base = file.parent
    parts = _split_files(_row_paths(table, base), splits, labels, file)
    where = f"manifest {file} (relative paths resolve against {base})"
    return scanned_splits(parts, class_names, where, opts)


def manifest_fingerprint(path: str | None = None, **_: Any) -> dict[str, Any]:
    """The manifest's content hash, and the files it lists by label, stamped by path, size and modification
    time (no image is opened). A bad manifest fails here, early."""
    file = _manifest_file(path)
    content = hashlib.sha256(file.read_bytes()).hexdigest()[:20]
    table = _checked_table(file)
    classes: dict[str, list[str]] = {}
    for image, label in zip(_row_paths(table, file.parent), table["label"].astype(str)):
        classes.setdefault(label, []).append(image)
    return fingerprint("manifest", classes, manifest=str(file), content=content)


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
