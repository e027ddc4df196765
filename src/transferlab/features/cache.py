"""The feature cache: pooled backbone features of the full splits, stored as safetensors under a key over
everything that changes them, computed once by whichever job takes the lock first."""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from transferlab.files import atomic_write, file_lock
from transferlab.identity import digest

SPLITS = ("train", "val", "test")


def state_digest(module: nn.Module) -> str:
    """SHA-256 over a module's parameters and buffers (names, dtypes, shapes, values).

    The identity of the weights the features come from, whatever their origin: a file, the hub, or a
    random initialisation (which depends on the seed).
    """
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def extract(
    backbone: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
    num_workers: int = 0,
) -> TensorDataset:
    """Pooled features of ``dataset`` from ``backbone`` in eval mode, with the labels.

    ``channels_last`` and ``autocast_dtype`` (e.g. bfloat16 for ``bf16-mixed``) match what the run's
    own forward pass does, so features equal those an uncached run computes.
    """
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval().to(device)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    feats, labels = [], []
    # a private generator: iterating a DataLoader draws a seed, which must not shift the run's global RNG
    # (cached and uncached runs of one seed then see the same data order and initialisation)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, generator=torch.Generator())
    for x, y in loader:
        x = x.to(device)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            feats.append(backbone(x).float().cpu())
        labels.append(torch.as_tensor(y, dtype=torch.long))
    backbone.train(was_training)
    return TensorDataset(torch.cat(feats), torch.cat(labels))


def _load(path: Path) -> dict[str, TensorDataset] | None:
    """The cached splits at ``path``, or None when it is missing or unreadable."""
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
        features = {s: TensorDataset(tensors[f"{s}_x"], tensors[f"{s}_y"]) for s in SPLITS}
    except Exception:  # noqa: BLE001 - a broken cache entry is recomputed, not fatal
        return None
    return features


def cached_features(
    backbone: nn.Module,
    datasets: Mapping[str, Dataset],
    cache_dir: Path,
    key_parts: Mapping[str, Any],
    device: str | torch.device = "cpu",
    **extract_kwargs: Any,
) -> tuple[dict[str, TensorDataset], bool]:
    """Features of the full train / val / test splits, from the cache or computed and stored.

    Returns the feature datasets and whether they came from the cache. ``key_parts`` must name
    everything that changes the features (``extract_kwargs`` included). Jobs wanting the same key take
    a file lock, so one computes while the others wait and then read; writes go to a temporary file
    renamed into place, so no reader ever sees a half-written cache, even without working locks.
    """
    from safetensors.torch import save

    path = Path(cache_dir) / f"{digest(key_parts, 20)}.safetensors"
    features = _load(path)
    if features is not None:
        return features, True
    with file_lock(path.parent / f".{path.stem}.lock"):
        features = _load(path)  # another job may have written it while this one waited
        if features is not None:
            return features, True
        features = {s: extract(backbone, datasets[s], device=device, **extract_kwargs) for s in SPLITS}
        tensors = {}
        for split, ds in features.items():
            tensors[f"{split}_x"], tensors[f"{split}_y"] = (t.contiguous() for t in ds.tensors)
        data = save(tensors, metadata={"key": json.dumps(key_parts, sort_keys=True, default=str)})
        atomic_write(path, lambda f: f.write(data), mode=0o644)  # a shared cache is readable by all
    return features, False
