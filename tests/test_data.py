"""Splits and nested, stratified training subsets; channel conversion."""

from __future__ import annotations

import numpy as np
import torch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from transferlab.data.digits import digits_splits
from transferlab.data.splits import stratified_split, subsample
from transferlab.data.transforms import ToChannels
from transferlab.errors import ConfigError, DataError

LABELS = np.repeat(np.arange(5), [40, 31, 27, 55, 12])


@settings(max_examples=60, deadline=None)
@given(
    f1=st.floats(0.1, 1.0),
    f2=st.floats(0.1, 1.0),
    seed=st.integers(0, 2**16),
)
def test_fraction_subsets_are_nested_and_stratified(f1: float, f2: float, seed: int) -> None:
    small, large = sorted((f1, f2))
    a = subsample(LABELS, small, None, seed)
    b = subsample(LABELS, large, None, seed)
    assert set(a) <= set(b), "the smaller fraction must lie inside the larger one"
    for cls, count in zip(*np.unique(LABELS, return_counts=True)):
        assert (LABELS[a] == cls).sum() == int(np.floor(small * count + 0.5))
    assert np.array_equal(a, subsample(LABELS, small, None, seed)), "not deterministic for its seed"


def test_per_class_subsets_are_nested_and_exact() -> None:
    a, b = subsample(LABELS, None, 3, 7), subsample(LABELS, None, 9, 7)
    assert set(a) <= set(b)
    assert np.bincount(LABELS[a]).tolist() == [3] * 5
    assert np.bincount(LABELS[b]).tolist() == [9] * 5


def test_different_subset_seeds_give_different_subsets() -> None:
    assert not np.array_equal(subsample(LABELS, 0.3, None, 0), subsample(LABELS, 0.3, None, 1))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, None])
def test_fraction_out_of_range_is_a_clear_error(fraction: float | None) -> None:
    with pytest.raises(ConfigError, match=r"dataset.fraction=.* must be in \(0, 1\]"):
        subsample(LABELS, fraction, None, 0)


def test_fraction_leaving_a_class_empty_names_the_class_and_the_fix() -> None:
    with pytest.raises(DataError, match=r"class '4' \(12 training examples\) with no example.*dataset.fraction ≥ 0.08333"):
        subsample(LABELS, 0.03, None, 0)


def test_per_class_larger_than_smallest_class() -> None:
    with pytest.raises(DataError, match=r"per_class=13 but class '4' has only 12.*per_class ≤ 12"):
        subsample(LABELS, None, 13, 0)


def test_digits_splits_are_disjoint_stratified_and_fixed() -> None:
    s = digits_splits(split_seed=0)
    sizes = len(s.train), len(s.val), len(s.test)
    assert sum(sizes) == 1797 and sizes[0] > 1200
    assert set(np.unique(s.val.labels)) == set(range(10))
    again = digits_splits(split_seed=0)
    assert np.array_equal(s.test.images, again.test.images)
    tr, va, te = stratified_split(np.repeat(np.arange(3), 50), 0.2, 0.2, 1)
    assert not (set(tr) & set(va)) and not (set(tr) & set(te)) and not (set(va) & set(te))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "LA"])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_any_image_mode_becomes_the_backbone_channels(mode: str, in_chans: int) -> None:
    img = Image.new(mode, (7, 5))
    out = ToChannels(in_chans)(img)
    assert out.mode == ("L" if in_chans == 1 else "RGB") and out.size == (7, 5)


def test_in_memory_batches_equal_the_per_example_loader() -> None:
    """BatchedTensors (one index operation per batch) gives the batches DataLoader's collate would."""
    from torch.utils.data import DataLoader, TensorDataset

    from transferlab.data.loaders import BatchedTensors, SplitsDataModule
    from transferlab.data.sampler import EpochSampler

    x, y = torch.randn(50, 3, 4, 4), torch.arange(50) % 7
    module = SplitsDataModule(batch_size=8, seed=3)
    module.train_set = TensorDataset(x, y)
    fast = module.train_dataloader()
    assert isinstance(fast.dataset, BatchedTensors)
    sampler = EpochSampler(module.train_set, 3, 0)
    plain = DataLoader(module.train_set, batch_size=8, sampler=sampler, generator=sampler.generator)
    for epoch in (0, 1):
        fast.sampler.set_epoch(epoch)
        sampler.set_epoch(epoch)
        pairs = list(zip(fast, plain, strict=True))
        assert len(pairs) == 7
        for (fx, fy), (px, py) in pairs:
            assert torch.equal(fx, px) and torch.equal(fy, py) and fy.dtype == py.dtype
