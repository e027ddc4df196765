"""Reliability: safe and atomic checkpoints, DDP checks (the data order and randomness fixed by (seed,
epoch) are ``transferlab.data.sampler``).

- ``SafeCheckpointIO``: checkpoints written to a temporary file in the same folder and renamed into place
  (a kill never leaves half a ``last.ckpt``), read back with ``torch.load(weights_only=True)`` (no pickled
  code runs).
- ``check_checkpoint_fits``: a resume checkpoint from another backbone or class count fails with the keys
  and shapes that differ, before Lightning touches it.
- ``DistributedSync``: under DDP, evaluation on every rank uses rank 0's buffers, and at the end of
  training the parameters are compared across ranks (a block that was not all-reduced is an error).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from transferlab.results import atomic_write
from transferlab.backbone import describe_load_error
from transferlab.errors import WeightsError


# ---- checkpoints ---------------------------------------------------------------------------------
class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic checkpoint writes (same-folder temporary file + rename) and ``weights_only`` reads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO takes no storage_options")
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint_safely(Path(path))


def load_checkpoint_safely(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a Lightning checkpoint, with an error that says what to do."""
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the fix
        raise WeightsError(
            f"cannot load checkpoint {path} safely: {describe_load_error(err)}. "
            f"Fix: delete {path} (the run then starts over), or resume only from checkpoints written by transferlab."
        ) from err
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise WeightsError(
            f"{path} is not a Lightning checkpoint (no state_dict). Fix: delete it, the run then starts over."
        )
    return dict(ckpt)


def check_checkpoint_fits(module: nn.Module, path: Path) -> dict[str, Any]:
    """Load ``path`` safely and check its weights have the module's keys and shapes; return it."""
    ckpt = load_checkpoint_safely(path)
    state: Mapping[str, Any] = ckpt["state_dict"]
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        hp = ckpt.get("hyper_parameters") or {}
        written_by = f" (written for backbone {hp.get('backbone')!r}, {hp.get('num_classes')} classes)" if hp else ""
        parts = [f"{len(items)} {what} {items[:5]}" for what, items in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)) if items]
        raise WeightsError(
            f"checkpoint {path}{written_by} does not fit this run's model: {', '.join(parts)}. "
            f"Fix: resume with the config that wrote it, or delete {path.parent} to start this run over."
        )
    return ckpt


# ---- DDP -----------------------------------------------------------------------------------------
def _checksums(module: nn.Module) -> tuple[list[str], torch.Tensor]:
    names, sums = [], []
    for name, p in module.named_parameters():
        flat = p.detach().double().flatten().cpu()
        weights = 1.0 + torch.arange(flat.numel(), dtype=torch.float64) / max(1, flat.numel())
        names.append(name)
        sums.append(torch.stack([flat.sum(), (flat * weights).sum()]))
    return names, torch.stack(sums) if sums else torch.zeros(0, 2, dtype=torch.float64)


class DistributedSync(pl.Callback):
    """Under DDP: evaluate with rank 0's buffers; check parameters are identical on every rank after fit.

    BatchNorm running statistics move with each rank's own batches; DDP broadcasts rank 0's before each
    training forward, but not before evaluation. Parameters must be bit-identical on all ranks after
    training, or some of them were not all-reduced (e.g. unfrozen after DDP wrapped the model).
    """

    def __init__(self) -> None:
        self.world_size = 1
        self.in_sync: bool | None = None

    def _broadcast_buffers(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            for buf in pl_module.buffers():
                torch.distributed.broadcast(buf.data, src=0)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._broadcast_buffers(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._broadcast_buffers(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.world_size = trainer.world_size
        if trainer.world_size <= 1:
            return
        names, sums = _checksums(pl_module)
        gathered = trainer.strategy.all_gather(sums.to(trainer.strategy.root_device)).cpu()  # (world, n, 2)
        differ = sorted({names[i] for r in range(1, gathered.shape[0]) for i in range(len(names))
                         if not torch.equal(gathered[r, i], gathered[0, i])})
        self.in_sync = not differ
        if differ:
            raise RuntimeError(
                f"after training, {len(differ)} parameters differ across the {trainer.world_size} DDP ranks "
                f"({differ[:5]}…): they were not all-reduced. This is a bug in transferlab's freeze policy under DDP; "
                "please report it. Until then train this strategy on one device."
            )
