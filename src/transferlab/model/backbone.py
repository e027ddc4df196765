"""timm backbones: creation by name, weights, blocks and the preprocessing they expect."""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from transferlab.errors import ConfigError, WeightsError

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def check_model_name(name: str) -> None:
    """Raise a ConfigError naming close timm models when ``name`` is unknown."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"backbone.name={name!r} is not a timm model.{hint} "
        "List names with `python -c \"import timm; print(timm.list_models('*resnet*'))\"`."
    )


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True when the Hugging Face hub answers within ``timeout_s`` and offline mode is off."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def create_backbone(
    name: str,
    in_chans: int = 3,
    input_size: int | None = None,
    global_pool: str | None = None,
    hub_weights: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Create a timm model without its classifier (``num_classes=0``): ``forward`` returns pooled features.

    ``input_size`` is passed as ``img_size`` to models that take one (ViTs); CNNs accept any size.
    ``hub_weights`` downloads timm's pretrained weights (or takes them from the local cache).
    """
    check_model_name(name)
    kw: dict[str, Any] = dict(num_classes=0, in_chans=in_chans, **kwargs)
    if global_pool is not None:
        kw["global_pool"] = global_pool
    try:
        return _create(name, hub_weights, kw, input_size)
    except (OSError, RuntimeError) as err:
        if not hub_weights:
            raise
        raise WeightsError(
            f"backbone.weights=hub: could not get timm's pretrained weights for {name!r} ({err}). "
            "The hub is unreachable or the weights are not cached. Fix: run once with network access "
            "to fill the cache, or use backbone.weights=null (random init), backbone.weights=source "
            "(the experiment's source task) or backbone.weights=/path/to/file.safetensors."
        ) from err


def _create(name: str, hub_weights: bool, kw: dict[str, Any], input_size: int | None) -> nn.Module:
    if hub_weights and not _hub_weights_cached(name) and not hub_reachable():
        raise OSError("no network and no cached copy")
    if input_size is not None:
        try:
            return timm.create_model(name, pretrained=hub_weights, img_size=input_size, **kw)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
    return timm.create_model(name, pretrained=hub_weights, **kw)


def _hub_weights_cached(name: str) -> bool:
    """Whether the Hugging Face cache holds the weights timm would load for ``name``."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not hub_id:
            return False
        for fname in ("model.safetensors", "pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(hub_id, fname), str):
                return True
    except Exception:  # noqa: BLE001 - a cache probe must never fail a run
        return False
    return False


def state_dict_differences(state: Mapping[str, Any], own: Mapping[str, Any], label: str) -> tuple[list[str], list[str], list[str]]:
    """How a loaded state dict differs from a model's own: its missing keys, its unexpected keys, and its shape
    mismatches (``key: <label> (shape) vs model (shape)``); three empty lists when it fits. Weights files and
    resume checkpoints are both checked by it before anything is loaded."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: {label} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    return missing, unexpected, mismatched


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load backbone weights from a ``.safetensors`` or ``.pth`` file without executing pickled code.

    Classifier keys (``fc``, ``head``, ``classifier``…) that the headless backbone lacks are dropped;
    any other missing or mismatched key is an error that lists the keys.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"backbone.weights={str(path)!r}: file not found. Give the path of a .safetensors or .pth file, "
            "or use backbone.weights=null|hub|source."
        )
    state = read_state_dict(path)
    own = model.state_dict()
    drop = [k for k in state if k not in own and _is_classifier_key(model, k)]
    for key in drop:
        state.pop(key)
    missing, unexpected, mismatched = state_dict_differences(state, own, "file")
    if missing or unexpected or mismatched:
        raise WeightsError(
            f"{path} does not fit backbone {type(model).__name__}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}, "
            f"{len(mismatched)} shape mismatches {mismatched[:5]}. "
            "Fix: use weights saved from the same backbone.name (and backbone.in_chans)."
        )
    not_finite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not_finite:
        raise WeightsError(
            f"{path} holds NaN or infinite values in {len(not_finite)} tensors {not_finite[:5]}: the training "
            "that wrote it diverged. Fix: use weights from a run that ended with a finite loss."
        )
    model.load_state_dict(state)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict safely: safetensors, or ``torch.load(weights_only=True)``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the fix
        raise WeightsError(
            f"cannot read weights from {path}: {describe_load_error(err)}. Fix: give a .safetensors file, or a .pth "
            "holding a plain state dict of tensors (pickled objects are not loaded, for safety)."
        ) from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict of tensors.")
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}


def describe_load_error(err: Exception) -> str:
    """One line on why ``torch.load(weights_only=True)`` or safetensors refused a file."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    found = re.search(r"Unsupported global: GLOBAL [\w.]+", str(err))
    if found:
        return f"it holds pickled Python objects, which are never loaded as they could run code ({found.group(0)})"
    if "Weights only load failed" in str(err):
        return "it is damaged or not a file of tensors (torch.load with weights_only=True refused it)"
    return f"it is damaged or not a weights file ({type(err).__name__}: {lines[0][:200] if lines else ''})"


def _is_classifier_key(model: nn.Module, key: str) -> bool:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ("fc", "head", "classifier")
    names = (names,) if isinstance(names, str) else tuple(names)
    return any(key == n or key.startswith(n + ".") for n in names)


def backbone_blocks(model: nn.Module, coarse: bool = True) -> list[list[str]]:
    """Parameter names of the backbone's blocks, bottom (stem) to top, from timm's ``group_matcher``.

    ``coarse=True`` gives stages (the unit of freezing); ``coarse=False`` finer layers (for layer decay).
    """
    if not hasattr(model, "group_matcher"):
        names = [n for n, _ in model.named_parameters()]
        return [names]
    groups = timm.models.group_parameters(model, model.group_matcher(coarse=coarse))
    blocks = [list(names) for _, names in sorted(groups.items())]
    return [b for b in blocks if b]


def data_config(model: nn.Module, input_size: int | None, crop_pct: float | None) -> dict[str, Any]:
    """The backbone's own preprocessing (timm ``resolve_model_data_config``), input size overridable."""
    cfg = dict(timm.data.resolve_model_data_config(model))
    if input_size is not None:
        cfg["input_size"] = (cfg["input_size"][0], int(input_size), int(input_size))
    if crop_pct is not None:
        cfg["crop_pct"] = float(crop_pct)
    return cfg
