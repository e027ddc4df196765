"""Pre-computed bottleneck features: run the frozen backbone once, train heads on them many times."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

SPLITS = ("train", "val", "test")


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (weights identity for cache keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(parts: Mapping[str, Any]) -> str:
    """A key over everything that changes the features: backbone, weights, preprocessing, dataset."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


@torch.no_grad()
def extract(
    backbone: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu", num_workers: int = 0
) -> TensorDataset:
    """Pooled features of ``dataset`` from ``backbone`` in eval mode, with the labels."""
    was_training = backbone.training
    backbone.eval().to(device)
    feats, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        feats.append(backbone(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y, dtype=torch.long))
    backbone.train(was_training)
    return TensorDataset(torch.cat(feats), torch.cat(labels))


def cached_features(
    backbone: nn.Module,
    datasets: Mapping[str, Dataset],
    cache_dir: Path,
    key_parts: Mapping[str, Any],
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> tuple[dict[str, TensorDataset], bool]:
    """Features of the full train / val / test splits, from the cache or computed and stored.

    Returns the feature datasets and whether they came from the cache. Writes go to a temporary file
    renamed into place, so concurrent jobs never see (or leave) a half-written cache.
    """
    from safetensors.torch import load_file, save_file

    path = Path(cache_dir) / f"{cache_key(key_parts)}.safetensors"
    if path.is_file():
        try:
            tensors = load_file(str(path))
            return {s: TensorDataset(tensors[f"{s}_x"], tensors[f"{s}_y"]) for s in SPLITS}, True
        except Exception:  # noqa: BLE001 - a broken cache entry is recomputed, not fatal
            path.unlink(missing_ok=True)
    features = {s: extract(backbone, datasets[s], device=device, num_workers=num_workers) for s in SPLITS}
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for split, ds in features.items():
        tensors[f"{split}_x"], tensors[f"{split}_y"] = (t.contiguous() for t in ds.tensors)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"key": json.dumps(key_parts, sort_keys=True, default=str)})
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return features, False
