"""Tests for transferlab.data.glyphs (procedural source-task images)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from transferlab.data.glyphs import glyph_classes, glyph_grid_png, render_glyphs


@pytest.fixture(scope="module")
def small():
    # 12 classes x 10 examples at 32 px, seed 0
    return render_glyphs(num_classes=12, per_class=10, size=32, seed=0)


def test_shapes_dtypes_range(small):
    images, labels = small
    assert images.shape == (120, 32, 32)
    assert images.dtype == np.uint8
    assert labels.shape == (120,)
    assert labels.dtype == np.int64
    assert images.max() >= 200  # white-ish strokes
    assert images.min() == 0
    # background dominates: most pixels black
    assert (images == 0).mean() > 0.5
    # anti-aliased: intermediate gray levels exist
    assert ((images > 0) & (images < images.max())).any()

    other, lab2 = render_glyphs(num_classes=3, per_class=4, size=20, seed=5)
    assert other.shape == (12, 20, 20) and lab2.shape == (12,)


def test_labels_every_class_per_class_times(small):
    _, labels = small
    counts = np.bincount(labels, minlength=12)
    assert counts.shape == (12,)
    assert (counts == 10).all()
    assert labels.min() == 0 and labels.max() == 11


def test_deterministic(small):
    images, labels = small
    images2, labels2 = render_glyphs(num_classes=12, per_class=10, size=32, seed=0)
    assert np.array_equal(images, images2)
    assert np.array_equal(labels, labels2)
    images3, _ = render_glyphs(num_classes=12, per_class=10, size=32, seed=1)
    assert not np.array_equal(images, images3)


def _same_strokes(a, b):
    return len(a) == len(b) and all(
        x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b)
    )


def test_glyph_classes_structure_and_seed_only():
    classes = glyph_classes(30, seed=0)
    assert len(classes) == 30
    for strokes in classes:
        assert 2 <= len(strokes) <= 4
        for s in strokes:
            assert s.ndim == 2 and s.shape[1] == 2 and s.shape[0] >= 2
            assert s.min() >= 0.0 and s.max() <= 1.0
    # Deterministic, and class c depends only on (seed, c), not num_classes.
    again = glyph_classes(30, seed=0)
    assert all(_same_strokes(a, b) for a, b in zip(classes, again))
    prefix = glyph_classes(7, seed=0)
    assert all(_same_strokes(a, b) for a, b in zip(prefix, classes[:7]))
    # Different seed -> different classes; classes differ from each other.
    other = glyph_classes(30, seed=1)
    assert not any(_same_strokes(a, b) for a, b in zip(classes, other))
    assert not _same_strokes(classes[0], classes[1])


def test_class_definitions_independent_of_per_class_and_size():
    # The same classes (hence the same first examples) whatever per_class is.
    small, _ = render_glyphs(num_classes=4, per_class=3, size=32, seed=0)
    big, _ = render_glyphs(num_classes=6, per_class=9, size=32, seed=0)
    big = big.reshape(6, 9, 32, 32)
    assert np.array_equal(small.reshape(4, 3, 32, 32), big[:4, :3])
    # A different size only changes rasterisation: downsampling a 64 px
    # rendering by 2x2 averaging is close to the 32 px rendering.
    hi, _ = render_glyphs(num_classes=4, per_class=3, size=64, seed=0)
    down = hi.reshape(12, 32, 2, 32, 2).astype(float).mean(axis=(2, 4))
    lo = small.astype(float)
    err_same = np.abs(down - lo).mean()
    err_other = np.abs(down - np.roll(lo, 3, axis=0)).mean()  # other classes
    assert err_same < 0.5 * err_other


def test_images_have_some_ink_but_not_all(small):
    images, _ = small
    ink = (images > 0).reshape(len(images), -1).mean(axis=1)
    assert (ink > 0.03).all(), ink.min()
    assert (ink < 0.6).all(), ink.max()
    # strokes stay inside the frame: the outer border is mostly black
    border = np.concatenate(
        [images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1
    )
    assert (border > 0).mean() < 0.05


def test_examples_within_class_differ(small):
    images, labels = small
    x = images.astype(np.float64).reshape(12, 10, -1)
    for c in range(12):
        cls = x[c]
        d = np.abs(cls[:, None] - cls[None]).mean(-1)  # (10, 10) mean abs diff
        off = d[~np.eye(10, dtype=bool)]
        assert (off > 0).all(), f"identical examples in class {c}"
        # jitter is visible, not just a few pixels of noise
        assert np.median(off) > 5.0, (c, np.median(off))
    # ... yet examples are closer to their own class centroid than to others
    cent = x.mean(axis=1)  # (12, P)
    flat = x.reshape(120, -1)
    dist = ((flat[:, None] - cent[None]) ** 2).sum(-1)
    assert (dist.argmin(1) == labels).mean() > 0.5


def test_learnable_but_not_trivial():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    images, labels = render_glyphs(num_classes=60, per_class=40, size=32, seed=0)
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    xtr, xte, ytr, yte = train_test_split(
        x, labels, test_size=0.25, stratify=labels, random_state=0
    )
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    # one BLAS thread: faster and steadier here than oversubscribed threads
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
        clf = LogisticRegression(max_iter=300).fit(xtr, ytr)
    acc = clf.score(xte, yte)
    # measured 0.83 (seeds 1, 2: 0.84); chance is 1/60
    assert 0.55 <= acc <= 0.97, acc


def test_grid_png(tmp_path):
    path = tmp_path / "grid.png"
    grid = glyph_grid_png(path, num_classes=3, per_class=4, size=16, seed=0)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert grid.dtype == np.uint8 and grid.shape == (3 * 18 + 2, 4 * 18 + 2)

