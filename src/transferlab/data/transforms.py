"""The backbone's own preprocessing (timm's ``create_transform``) after a conversion to its channel count,
and the training augmentation options."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import timm.data
import torch
from PIL import Image

from transferlab.errors import ConfigError

Transform = Callable[[Image.Image], torch.Tensor]


class ToChannels:
    """Convert any PIL image (1, L, LA, P, PA, RGB, RGBA, CMYK, I;16, I, F…) to the backbone's channel count.

    Transparent pixels are composited onto black. 16-bit images keep their brightness (scaled by
    255/65535, as every image of a dataset must be scaled alike); 32-bit integer and float images are
    scaled from the range their values fit (0–1, 0–255, 0–65535), else stretched per image.
    """

    def __init__(self, in_chans: int) -> None:
        if in_chans not in (1, 3):
            raise ConfigError(f"backbone.in_chans={in_chans}: image data supports 1 (grayscale) or 3 (RGB).")
        self.mode = "L" if in_chans == 1 else "RGB"

    def __call__(self, img: Image.Image) -> Image.Image:
        if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (0, 0, 0, 255))
            img = Image.alpha_composite(background, img)
        if img.mode.startswith("I") or img.mode == "F":
            img = Image.fromarray(_to_uint8(np.asarray(img), img.mode))
        return img.convert(self.mode)


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth pixels as 0–255 (see ToChannels)."""
    arr = arr.astype(np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        scale = 65535.0
    elif lo >= 0 and hi <= 1.0 and mode == "F":
        scale = 1.0
    elif lo >= 0 and hi <= 255:
        scale = 255.0
    elif lo >= 0 and hi <= 65535:
        scale = 65535.0
    else:  # outside any fixed range: stretch this image
        return ((arr - lo) / max(hi - lo, 1e-12) * 255).round().astype(np.uint8)
    return np.clip(arr / scale * 255.0, 0, 255).round().astype(np.uint8)


#: ``dataset.augment.auto_augment`` values that mean torchvision's TrivialAugmentWide (timm has none)
TRIVIAL_AUGMENT = ("trivialaugment", "trivialaugmentwide", "trivial", "ta_wide")


def augment_options(augment: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``dataset.augment`` keys against timm's ``create_transform`` and make lists tuples."""
    allowed = set(inspect.signature(timm.data.create_transform).parameters)
    reserved = {"input_size", "is_training", "mean", "std", "crop_pct", "separate", "use_prefetcher", "no_aug"}
    unknown = sorted(set(augment) - (allowed - reserved))
    if unknown:
        options = ", ".join(sorted(allowed - reserved - {"naflex", "patch_size", "max_seq_len", "patchify",
                                                         "patchify_channels_last", "patchify_flatten", "tf_preprocessing"}))
        raise ConfigError(
            f"dataset.augment: unknown option(s) {unknown}. Use timm create_transform training options: {options}."
        )
    return {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in augment.items()}


def build_transform(data_config: Mapping[str, Any], in_chans: int, training: bool = False, **augment: Any) -> Transform:
    """timm's ``create_transform`` for the backbone's data config, after a channel conversion.

    ``augment`` (timm training options: scale, ratio, hflip, vflip, color_jitter, auto_augment, re_prob…)
    is used only when ``training``; ``auto_augment='trivialaugment'`` selects torchvision's
    TrivialAugmentWide in the place timm puts its auto-augment.
    """
    from torchvision import transforms

    cfg = dict(data_config)
    if in_chans == 1:
        cfg["mean"], cfg["std"] = (float(np.mean(cfg["mean"])),), (float(np.mean(cfg["std"])),)
    cfg["input_size"] = (in_chans, *tuple(cfg["input_size"])[1:])
    if not training:
        return transforms.Compose([ToChannels(in_chans), timm.data.create_transform(**cfg, is_training=False)])
    options = augment_options(augment)
    trivial = str(options.get("auto_augment") or "").lower().replace("-", "").replace("_", "") in {
        t.replace("_", "") for t in TRIVIAL_AUGMENT
    }
    try:
        if trivial:
            options["auto_augment"] = None
            options.setdefault("color_jitter", None)  # as timm does when an auto-augment is on
            primary, secondary, final = timm.data.create_transform(**cfg, is_training=True, separate=True, **options)
            fill = [int(round(255 * m)) for m in cfg["mean"]]
            trivial_tf = transforms.TrivialAugmentWide(fill=fill if in_chans == 3 else fill[0])
            tf: Transform = transforms.Compose([primary, trivial_tf, secondary, final])
        else:
            tf = timm.data.create_transform(**cfg, is_training=True, **options)
    except (AssertionError, ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"dataset.augment={dict(augment)}: timm rejects it ({type(err).__name__}: {err}).") from err
    return transforms.Compose([ToChannels(in_chans), tf])
