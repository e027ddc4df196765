"""DDP's special cases, in one place: rank 0's buffers for evaluation, a check that ranks agree after
training, and refusing a DDP launch that would re-run a whole Hydra multirun in each process."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch import nn

from transferlab.errors import ConfigError


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
        self.check(trainer, pl_module)

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Raise when the parameters differ across ranks (after training, or after every rank solved the same
        probe); sets ``in_sync``. Nothing to check on one device."""
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
                "please report it. Until then train this freeze strategy on one device."
            )


def relaunches_command(trainer: pl.Trainer) -> bool:
    """Whether Lightning's DDP launcher will start the other ranks by re-running ``sys.argv``."""
    launcher = getattr(trainer.strategy, "launcher", None)
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return (
        isinstance(launcher, _SubprocessScriptLauncher)
        and trainer.world_size > 1
        and not (environment is not None and environment.creates_processes_externally)
    )


def refuse_relaunch_in_multirun(trainer: pl.Trainer, distribution: object) -> None:
    """Raise ConfigError when DDP inside a Hydra multirun would re-run the whole sweep in every process.

    ``distribution`` is ``trainer.strategy``, Lightning's name for how training is spread over processes (ddp…);
    in this package "strategy" alone is always the freeze policy (``strategy=finetune``)."""
    if relaunches_command(trainer):
        raise ConfigError(
            f"trainer.strategy={distribution} with {trainer.world_size} processes: Lightning starts the "
            "other processes by re-running this command, which inside a Hydra multirun (-m) re-runs the whole sweep in "
            "each of them, in lockstep only until one job fails on one process. Fix: run the jobs one at a time "
            "without -m, or use a Hydra launcher that starts one process per device (submitit on SLURM with "
            "tasks_per_node = trainer.devices), or trainer.devices=1."
        )
