"""``dataset=digits``: scikit-learn's bundled handwritten digits, no download."""

from __future__ import annotations

from typing import Any

import numpy as np

from transferlab.data.splits import DatasetSplits, split_in_memory


def digits_splits(val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0, **_: Any) -> DatasetSplits:
    """scikit-learn's bundled handwritten digits (1,797 8×8 images, 10 classes), no download."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    return split_in_memory(images, labels, [str(i) for i in range(10)], val_fraction, test_fraction, split_seed)
