"""Checkpoints: cheap on short runs, atomic to write, safe to read.

- ``BestWeights`` and ``LastCheckpoint``: the best weights in memory, ``last.ckpt`` at epoch ends.
- ``SafeCheckpointIO``: checkpoints written to a temporary file in the same folder and renamed into place
  (a kill never leaves half a ``last.ckpt``), read back with ``torch.load(weights_only=True)`` (no pickled
  code runs).
- ``check_checkpoint_fits``: a resume checkpoint from another backbone or class count fails with the keys
  and shapes that differ, before Lightning touches it.

Lightning's ModelCheckpoint writes the whole model (and optimizer state) to disk at every improvement;
on a CPU study of seconds-long runs that I/O dominates. Here the best validation weights are copied in
memory (and travel inside ``last.ckpt`` as this callback's state, so a resume keeps them), and
``last.ckpt`` is written atomically at the end of an epoch once ``every_s`` seconds have passed since the
previous write (``every_s=0``: every epoch).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback
from torch import nn

from transferlab.errors import WeightsError
from transferlab.files import atomic_write
from transferlab.model.backbone import describe_load_error, state_dict_differences

LAST = "last.ckpt"
BEST = "best.pt"


class BestWeights(Callback):
    """Tracks ``monitor`` after each validation and keeps a copy of the best weights; ``curve`` is every
    validation's ``[epochs trained, value]`` (the record's ``val_curve``, which rungs are scored on)."""

    def __init__(self, monitor: str, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"monitor_mode={mode!r}: use max or min")
        self.monitor, self.mode = monitor, mode
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.curve: list[list[float]] = []

    def _better(self, value: float) -> bool:
        if self.best_score is None:
            return True
        return value > self.best_score if self.mode == "max" else value < self.best_score

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        self.curve.append([int(trainer.current_epoch) + 1, value])
        if value == value and self._better(value):  # NaN is never best
            self.best_score, self.best_epoch = value, int(trainer.current_epoch)
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}

    def restore(self, pl_module: pl.LightningModule) -> bool:
        """Load the best weights into ``pl_module``; False when no validation ran."""
        if self.best_state is None:
            return False
        pl_module.load_state_dict(self.best_state)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "best_state": self.best_state,
                "curve": self.curve}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict.get("best_score")
        self.best_epoch = state_dict.get("best_epoch")
        self.best_state = state_dict.get("best_state")
        self.curve = [list(point) for point in state_dict.get("curve") or []]  # none in checkpoints written before it


class LastCheckpoint(Callback):
    """Writes ``dirpath/last.ckpt`` (full training state) at epoch ends, at most every ``every_s`` seconds,
    and after the last epoch when ``save_final`` (checkpoints that are kept).

    Without ``save_final`` a crash while testing costs at most ``every_s`` seconds of training, as anywhere
    else, and a short run does not pay for a full-state write it deletes unread (0.5 s of a 6 s study job).
    With ``keep_latest_after_s`` (inside a SLURM job, where preemption is routine) the end of an epoch longer
    than that which is not written is kept in memory instead, so :meth:`save_latest` can write the last
    finished epoch when a signal stops the run mid-epoch (``run.preemption``; a shorter epoch is finished
    instead). The copy costs 80 ms for resnet18 with AdamW state on this CPU (a file write 180 ms).
    """

    def __init__(self, dirpath: Path, every_s: float = 0.0, save_final: bool = False,
                 keep_latest_after_s: float | None = None) -> None:
        self.path = Path(dirpath) / LAST
        self.every_s = float(every_s)
        self.save_final = save_final
        self.keep_latest_after_s = keep_latest_after_s
        self._latest: dict[str, Any] | None = None
        self._saved_at = self._epoch_started = time.monotonic()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        final = trainer.current_epoch + 1 >= (trainer.max_epochs or 0) or trainer.should_stop
        long_epoch = self.keep_latest_after_s is not None and time.monotonic() - self._epoch_started > self.keep_latest_after_s
        if (final and self.save_final) or time.monotonic() - self._saved_at >= self.every_s:
            self.save(trainer)
        elif long_epoch:  # what save() would write now, copied: training goes on changing the tensors
            checkpoint = trainer._checkpoint_connector.dump_checkpoint()
            self._latest = _cpu_copy(checkpoint) if trainer.is_global_zero else None

    def save_latest(self, trainer: pl.Trainer) -> None:
        """Write the last finished epoch kept in memory, if it is newer than ``last.ckpt`` (rank 0)."""
        if self._latest is not None and trainer.is_global_zero:
            trainer.strategy.checkpoint_io.save_checkpoint(self._latest, self.path)
            self._latest = None

    def save(self, trainer: pl.Trainer) -> None:
        """Atomic through the trainer's checkpoint IO (``reproducible.SafeCheckpointIO``): a kill during the
        write leaves the previous ``last.ckpt`` intact."""
        trainer.save_checkpoint(str(self.path))
        self._latest = None
        self._saved_at = time.monotonic()


def _cpu_copy(value: Any) -> Any:
    """``value`` with every tensor copied to the CPU (dicts, lists and tuples walked)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cpu_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_cpu_copy(v) for v in value)
    return value



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
    missing, unexpected, mismatched = state_dict_differences(state, own, "checkpoint")
    if missing or unexpected or mismatched:
        hp = ckpt.get("hyper_parameters") or {}
        backbone, choices = hp.get("backbone"), hp.get("choices") or hp  # flat before the typed groups
        name = backbone.get("name") if isinstance(backbone, dict) else backbone
        written_by = f" (written for backbone {name!r}, {choices.get('num_classes')} classes)" if hp else ""
        parts = [f"{len(items)} {what} {items[:5]}" for what, items in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)) if items]
        raise WeightsError(
            f"checkpoint {path}{written_by} does not fit this run's model: {', '.join(parts)}. "
            f"Fix: resume with the config that wrote it, or delete {path.parent} to start this run over."
        )
    return ckpt
