"""``dataset=glyphs``, procedural "glyph" images: a formula-driven source task for pre-training.

Each class is a fixed, random set of 2-4 pen strokes (line segments, polylines,
quadratic or cubic Bezier arcs).  Each example redraws its class's strokes with
per-example random jitter of the stroke points (a smooth random warp plus
per-stroke anchor jitter), random scale, shift, small rotation, stroke width and
ink intensity.  Strokes are rendered anti-aliased from the exact distance of each
pixel centre to the nearest stroke segment, giving white-ish strokes on a black
background in uint8 -- visually close to scikit-learn's 8x8 digits upsampled to
~32 px, which are the target task.

The rendering needs only numpy; ``glyph_splits`` splits the images for
training.  ``glyph_grid_png`` uses matplotlib when it is installed and
otherwise falls back to a tiny built-in PNG writer.

Determinism
-----------
* Class ``c``'s strokes depend only on ``(seed, c)``: not on ``num_classes``,
  ``per_class`` or ``size``.
* Example ``i`` of class ``c`` depends only on ``(seed, c, i)`` (and ``size``
  through rasterisation only; its geometry is resolution independent).
  Examples are returned class-major, so a dataset with a larger ``per_class`` or
  ``num_classes`` contains the smaller one's examples as a subset.

Coordinates: stroke points are ``(x, y)`` in ``[0, 1]^2`` with ``x`` to the
right (image column) and ``y`` downward (image row).
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any, Union

import numpy as np

from transferlab.data.fingerprint import fingerprint
from transferlab.data.splits import DatasetSplits, split_in_memory

__all__ = ["glyph_classes", "render_glyphs", "glyph_grid_png", "glyph_splits", "glyph_fingerprint"]
RENDER_VERSION = 1  # bump when the rendering changes: runs name it in their identity (glyph_fingerprint)

# Stream tags, so class shapes and example noise draw from unrelated streams.
_CLASS_TAG = 0x6C7970  # "glyp"
_EXAMPLE_TAG = 0x657861  # "exa"

# Class-shape parameters.
_MIN_STROKES, _MAX_STROKES = 2, 4
_BOX_LO, _BOX_HI = 0.15, 0.85  # class glyphs are normalised into this box
_GLYPH_EXTENT = 0.62  # longest side of a normalised class glyph
_QUAD_SAMPLES = 7  # points a quadratic arc is sampled to (6 segments)
_CUBIC_SAMPLES = 9  # points a cubic arc is sampled to (8 segments)

# Per-example variation.
_SCALE_RANGE = (0.75, 1.10)
_SHIFT = 0.07  # uniform shift in [-_SHIFT, _SHIFT] (fraction of image)
_ROT_DEG = 12.0  # uniform rotation in [-_ROT_DEG, _ROT_DEG]
_WARP_AMP = 0.025  # amplitude of the smooth random warp (fraction of image)
_ANCHOR_JITTER = 0.015  # std of per-stroke anchor jitter (fraction of image)
_WIDTH_RANGE = (0.060, 0.105)  # stroke width, fraction of image size
_INK_RANGE = (0.80, 1.00)  # peak intensity, fraction of 255
_EDGE_PX = 1.0  # width of the anti-aliased edge ramp, in pixels

_N_WARP = 2  # sinusoidal components per axis in the warp
_N_ANCHORS = 3  # anchor jitters per stroke, at arc-length 0, 1/2, 1
# Fixed number of random numbers per example, so the stream layout (and thus
# every example) does not depend on the class's number of strokes.
_N_EXAMPLE_RANDOMS = 8 + 4 * _N_WARP * 2 + _MAX_STROKES * _N_ANCHORS * 2


# --------------------------------------------------------------------------
# class definitions
# --------------------------------------------------------------------------
def _bezier(ctrl: np.ndarray, n: int) -> np.ndarray:
    """Sample a quadratic (3 points) or cubic (4 points) Bezier curve."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    if len(ctrl) == 3:
        p0, p1, p2 = ctrl
        return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    p0, p1, p2, p3 = ctrl
    return (
        (1 - t) ** 3 * p0
        + 3 * (1 - t) ** 2 * t * p1
        + 3 * (1 - t) * t**2 * p2
        + t**3 * p3
    )


def _polyline_length(p: np.ndarray) -> float:
    """Total length of a polyline (k, 2)."""
    return float(np.sum(np.hypot(*np.diff(p, axis=0).T)))


def _random_stroke(rng: np.random.Generator, start: Union[np.ndarray, None]) -> np.ndarray:
    """One stroke as a polyline (k, 2); ``start`` optionally fixes its first point."""

    def pt() -> np.ndarray:
        return rng.uniform(0.0, 1.0, size=2)

    kind = rng.integers(4)  # 0 line, 1 polyline, 2 quadratic arc, 3 cubic arc
    for _ in range(50):  # rejection: strokes must not be tiny dots
        p0 = start if start is not None else pt()
        if kind == 0:
            pts = np.stack([p0, pt()])
        elif kind == 1:
            pts = np.stack([p0] + [pt() for _ in range(int(rng.integers(2, 4)))])
        elif kind == 2:
            pts = _bezier(np.stack([p0, pt(), pt()]), _QUAD_SAMPLES)
        else:
            pts = _bezier(np.stack([p0, pt(), pt(), pt()]), _CUBIC_SAMPLES)
        if _polyline_length(pts) >= 0.35:
            return pts
    return pts  # pragma: no cover - practically unreachable


def _class_strokes(seed: int, c: int) -> list[np.ndarray]:
    """Class ``c``'s strokes, normalised into the glyph box; fixed by ``(seed, c)``."""
    rng = np.random.default_rng([_CLASS_TAG, int(seed), int(c)])
    n = int(rng.integers(_MIN_STROKES, _MAX_STROKES + 1))
    strokes: list[np.ndarray] = []
    for _ in range(n):
        start = None
        # Pen strokes usually touch: often start on an earlier stroke.
        if strokes and rng.random() < 0.6:
            prev = strokes[int(rng.integers(len(strokes)))]
            start = prev[int(rng.integers(len(prev)))].copy()
        strokes.append(_random_stroke(rng, start))
    # Normalise: centre the bounding box, longest side -> _GLYPH_EXTENT.
    allp = np.concatenate(strokes)
    lo, hi = allp.min(0), allp.max(0)
    scale = _GLYPH_EXTENT / max(float((hi - lo).max()), 1e-6)
    centre = (lo + hi) / 2
    out = [np.clip((s - centre) * scale + 0.5, _BOX_LO, _BOX_HI) for s in strokes]
    return [np.ascontiguousarray(s, dtype=np.float64) for s in out]


def glyph_classes(num_classes: int, seed: int) -> list[list[np.ndarray]]:
    """Per class, a fixed random set of 2-4 strokes.

    Each stroke is an array ``(k, 2)`` of points ``(x, y)`` in ``[0, 1]^2``:
    a line segment (k=2), a polyline (k=3..4), or a quadratic / cubic Bezier
    arc already sampled to a polyline (k=7 / k=9).  Class ``c`` depends only
    on ``(seed, c)``, so ``glyph_classes(n, s)[:m] == glyph_classes(m, s)``.
    """
    if num_classes < 0:
        raise ValueError("num_classes must be >= 0")
    return [_class_strokes(seed, c) for c in range(num_classes)]


# --------------------------------------------------------------------------
# per-example geometry
# --------------------------------------------------------------------------
def _example_randoms(seed: int, c: int, n: int) -> np.ndarray:
    """(n, _N_EXAMPLE_RANDOMS) uniforms in [0, 1); row i depends on (seed, c, i)."""
    out = np.empty((n, _N_EXAMPLE_RANDOMS))
    for i in range(n):
        out[i] = np.random.default_rng([_EXAMPLE_TAG, int(seed), int(c), i]).random(
            _N_EXAMPLE_RANDOMS
        )
    return out


def _class_segments(strokes: list[np.ndarray], u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jitter/transform a class's strokes for each example.

    ``u``: (n, _N_EXAMPLE_RANDOMS) uniforms.  Returns segment start and end
    points, each (n, S, 2) in [0, 1] image coordinates, and the per-example
    (width_fraction, ink) as (n, 2).
    """
    n = len(u)
    pts = np.concatenate(strokes)  # (M, 2)
    sid = np.concatenate([np.full(len(s), j) for j, s in enumerate(strokes)])
    # normalised arc-length position of each vertex within its stroke
    tpar = []
    for s in strokes:
        cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(s, axis=0).T))])
        tpar.append(cum / max(cum[-1], 1e-9))
    tpar = np.concatenate(tpar)

    k = 0

    def take(m: int) -> np.ndarray:
        nonlocal k
        r = u[:, k : k + m]
        k += m
        return r

    g = take(8)
    scale = _SCALE_RANGE[0] + (_SCALE_RANGE[1] - _SCALE_RANGE[0]) * g[:, 0]
    theta = np.deg2rad(_ROT_DEG) * (2 * g[:, 1] - 1)
    shift = _SHIFT * (2 * g[:, 2:4] - 1)
    width = _WIDTH_RANGE[0] + (_WIDTH_RANGE[1] - _WIDTH_RANGE[0]) * g[:, 4]
    ink = _INK_RANGE[0] + (_INK_RANGE[1] - _INK_RANGE[0]) * g[:, 5]

    # Smooth random warp: d_a(p) = sum_j amp * sin(2 pi (f_j . p) + phase_j).
    w = take(4 * _N_WARP * 2).reshape(n, 2, _N_WARP, 4)
    freq = 0.5 + 1.0 * w[..., :2]  # (n, 2, J, 2): 0.5..1.5 cycles per image
    freq = freq * np.where(w[..., 2:3] < 0.5, -1.0, 1.0)
    phase = 2 * np.pi * w[..., 3]  # (n, 2, J)
    amp = _WARP_AMP / np.sqrt(_N_WARP)
    arg = 2 * np.pi * np.einsum("najd,md->namj", freq, pts) + phase[:, :, None, :]
    warp = amp * np.sin(arg).sum(-1)  # (n, 2, M)
    p = pts[None] + np.moveaxis(warp, 1, 2)  # (n, M, 2)

    # Per-stroke anchor jitter at arc-length 0, 1/2, 1, interpolated linearly.
    a = take(_MAX_STROKES * _N_ANCHORS * 2).reshape(n, _MAX_STROKES, _N_ANCHORS, 2)
    # uniform with the std of _ANCHOR_JITTER
    a = (2 * a - 1) * (_ANCHOR_JITTER * np.sqrt(3.0))
    seg_t = tpar * (_N_ANCHORS - 1)
    lo = np.minimum(np.floor(seg_t).astype(int), _N_ANCHORS - 2)
    frac = (seg_t - lo)[None, :, None]
    p = p + (1 - frac) * a[:, sid, lo] + frac * a[:, sid, lo + 1]

    # Similarity transform about the image centre.
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (n,2,2)
    p = np.einsum("nij,nmj->nmi", rot * scale[:, None, None], p - 0.5) + 0.5 + shift[:, None]

    # Segments between consecutive vertices of the same stroke.
    same = sid[1:] == sid[:-1]
    i0 = np.flatnonzero(same)
    return p[:, i0], p[:, i0 + 1], np.stack([width, ink], -1)


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------
def _rasterise(
    a: np.ndarray, b: np.ndarray, owner: np.ndarray, n_img: int, size: int
) -> np.ndarray:
    """Minimum distance (pixels) from each pixel centre to the segments of its image.

    ``a``, ``b``: (T, 2) segment endpoints in pixel units, grouped by image;
    ``owner``: (T,) image index, non-decreasing, every image owning >= 1 segment.
    Returns (n_img, size*size) float32.
    """
    c = np.arange(size, dtype=np.float32) + 0.5
    px = np.tile(c, size)[None, :]  # x = column
    py = np.repeat(c, size)[None, :]  # y = row
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    if len(starts) != n_img:
        raise ValueError("every image must own at least one segment")
    bounds = np.r_[starts, len(owner)]  # image k owns segments bounds[k]:bounds[k+1]
    out = np.empty((n_img, size * size), np.float32)
    # Chunk whole images so each (segments x pixels) block stays ~ 8M floats.
    per_block = max(1, int(8_000_000 // (size * size)))
    img0 = 0
    while img0 < n_img:
        t0 = bounds[img0]
        k = int(np.searchsorted(bounds, t0 + per_block, side="right")) - 1
        img1 = min(max(img0 + 1, k), n_img)
        s1 = bounds[img1]
        ax, ay = a[t0:s1, 0:1].astype(np.float32), a[t0:s1, 1:2].astype(np.float32)
        dx_, dy_ = (b[t0:s1, 0:1] - a[t0:s1, 0:1]), (b[t0:s1, 1:2] - a[t0:s1, 1:2])
        l2 = dx_ * dx_ + dy_ * dy_
        inv = np.where(l2 > 1e-12, 1.0 / np.maximum(l2, 1e-12), 0.0)
        ux, uy = (dx_ * inv).astype(np.float32), (dy_ * inv).astype(np.float32)
        dx_, dy_ = dx_.astype(np.float32), dy_.astype(np.float32)
        qx = px - ax  # (t, P)
        qy = py - ay
        t = qx * ux
        t += qy * uy
        np.clip(t, 0.0, 1.0, out=t)
        qx -= t * dx_
        qy -= t * dy_
        qx *= qx
        qy *= qy
        qx += qy
        out[img0:img1] = np.minimum.reduceat(qx, starts[img0:img1] - t0, axis=0)
        img0 = img1
    np.sqrt(out, out=out)
    return out


def render_glyphs(
    num_classes: int = 60, per_class: int = 60, size: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Render the glyph dataset.

    Returns ``(images, labels)``: ``images`` uint8 ``(N, size, size)`` with
    background 0 and anti-aliased strokes up to 255, ``labels`` int64 ``(N,)``,
    ``N = num_classes * per_class``, ordered class-major (class 0's examples
    first, in index order).  Example ``i`` of class ``c`` depends only on
    ``(seed, c, i)``: bit-identical across calls and across ``num_classes`` /
    ``per_class``.
    """
    if num_classes < 0 or per_class < 0:
        raise ValueError("num_classes and per_class must be >= 0")
    if size < 4:
        raise ValueError("size must be >= 4")
    n_img = num_classes * per_class
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    if n_img == 0:
        return np.zeros((0, size, size), np.uint8), labels

    seg_a, seg_b, owner, params = [], [], [], []
    for c, strokes in enumerate(glyph_classes(num_classes, seed)):
        u = _example_randoms(seed, c, per_class)
        a, b, wp = _class_segments(strokes, u)
        n_seg = a.shape[1]
        seg_a.append(a.reshape(-1, 2))
        seg_b.append(b.reshape(-1, 2))
        owner.append(np.repeat(np.arange(c * per_class, (c + 1) * per_class), n_seg))
        params.append(wp)
    a = np.concatenate(seg_a) * size
    b = np.concatenate(seg_b) * size
    owner = np.concatenate(owner)
    width, ink = np.concatenate(params).T

    dist = _rasterise(a, b, owner, n_img, size)  # (N, P) pixels
    half = (width * size / 2).astype(np.float32)[:, None]
    # linear ramp of _EDGE_PX pixels centred on the stroke edge, then smoothstep
    v = np.clip((half - dist) / np.float32(_EDGE_PX) + np.float32(0.5), 0.0, 1.0)
    v = v * v * (3.0 - 2.0 * v)
    v *= (255.0 * ink).astype(np.float32)[:, None]
    images = np.rint(v).astype(np.uint8).reshape(n_img, size, size)
    return images, labels


def glyph_splits(
    num_classes: int = 60,
    examples_per_class: int = 60,
    render_size: int = 32,
    glyph_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    **_: Any,
) -> DatasetSplits:
    """Procedurally rendered stroke glyphs (the embedded source task), deterministic for ``glyph_seed``."""
    images, labels = render_glyphs(num_classes, examples_per_class, render_size, glyph_seed)
    names = [f"glyph_{i:03d}" for i in range(num_classes)]
    return split_in_memory(images, labels, names, val_fraction, test_fraction, split_seed)


def glyph_fingerprint(**_: Any) -> dict[str, Any]:
    """The glyphs are a function of their config keys and of this code's ``RENDER_VERSION``."""
    return fingerprint("glyphs", version=RENDER_VERSION)


# --------------------------------------------------------------------------
# preview
# --------------------------------------------------------------------------
def _write_png_gray(path: str, img: np.ndarray) -> None:
    """Minimal 8-bit grayscale PNG writer (no dependencies)."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(chunk(b"IEND", b""))


def glyph_grid_png(
    path: Union[str, os.PathLike],
    num_classes: int = 10,
    per_class: int = 8,
    size: int = 32,
    seed: int = 0,
    upscale: int = 3,
) -> np.ndarray:
    """Write a PNG preview: one row per class, ``per_class`` examples per row.

    Uses ``matplotlib.image.imsave`` when matplotlib is installed, otherwise a
    built-in PNG writer.
    Returns the grid image (uint8, before upscaling) that was written.
    """
    images, _ = render_glyphs(num_classes, per_class, size, seed)
    gap = 2
    h = num_classes * (size + gap) + gap
    w = per_class * (size + gap) + gap
    grid = np.full((h, w), 60, np.uint8)  # gray separators
    for k, im in enumerate(images):
        r, c = divmod(k, per_class)
        y, x = gap + r * (size + gap), gap + c * (size + gap)
        grid[y : y + size, x : x + size] = im
    big = np.kron(grid, np.ones((upscale, upscale), np.uint8)) if upscale > 1 else grid
    path = os.fspath(path)
    try:
        # matplotlib.image.imsave needs no GUI backend and leaves the user's
        # pyplot backend untouched.
        import matplotlib.image as mpimg

        mpimg.imsave(path, big, cmap="gray", vmin=0, vmax=255, format="png")
    except ImportError:
        _write_png_gray(path, big)
    return grid
