"""``dataset=digits``: scikit-learn's bundled handwritten digits, no download."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import numpy as np

from transferlab.data.fingerprint import fingerprint
from transferlab.data.splits import DatasetSplits, split_in_memory
from transferlab.errors import ConfigError


def _kept_digits(labels: Sequence[int] | None) -> list[int]:
    """``dataset.labels`` checked: the digits to keep (all ten when null)."""
    if labels is None:
        return list(range(10))
    kept = [int(v) for v in labels]
    if len(set(kept)) != len(kept) or len(kept) < 2 or not set(kept) <= set(range(10)):
        raise ConfigError(f"dataset.labels={list(labels)} must list two or more different digits 0-9 (e.g. [5, 6, 7, 8, 9]), or be null.")
    return kept


def digits_splits(val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0, labels: Sequence[int] | None = None,
                  **_: Any) -> DatasetSplits:
    """scikit-learn's bundled handwritten digits (1,797 8×8 images, 10 classes), no download.

    ``labels`` keeps those digits only, as classes 0…k-1 in the order given (their names are the digits):
    digits 0-4 and 5-9 make a source and a target task without shared classes.
    """
    from sklearn.datasets import load_digits

    kept = _kept_digits(labels)
    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    target = digits.target.astype(np.int64)
    if labels is not None:
        class_of = np.full(10, -1, dtype=np.int64)
        class_of[kept] = np.arange(len(kept))
        mask = class_of[target] >= 0
        images, target = images[mask], class_of[target[mask]]
    return split_in_memory(images, target, [str(d) for d in kept], val_fraction, test_fraction, split_seed)


def digits_fingerprint(**_: Any) -> dict[str, Any]:
    """The digits ship with scikit-learn: its version names them (the config keys choose among them)."""
    return fingerprint("digits", version=f"scikit-learn {version('scikit-learn')}")
