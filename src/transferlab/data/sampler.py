"""The training order and randomness fixed by (seed, epoch).

``EpochSampler``: the training order depends only on (seed, epoch) (and the rank's shard); at the start
of each epoch it also re-seeds the process RNGs, so augmentation and dropout of epoch ``e`` do not depend
on what ran before. A run resumed from its end-of-epoch checkpoint then matches an uninterrupted one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset, DistributedSampler


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (seed, epoch, rank…): nearby inputs give unrelated seeds."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def seed_process(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def _dist_world() -> tuple[int, int]:
    """(world size, rank) of the DDP process group, or (1, 0) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def next_epoch(trainer: pl.Trainer | None) -> int:
    """The epoch a run resumed from a checkpoint saved now starts at: the number Lightning gives
    ``set_epoch`` (after the end of epoch ``e`` that is ``e + 1``; mid-epoch, ``e``)."""
    try:
        return int(trainer.fit_loop.epoch_progress.current.processed) if trainer is not None else 0
    except (AttributeError, RuntimeError):
        return 0


class EpochSampler(DistributedSampler):
    """A shuffled order fixed by (seed, epoch), sharded over DDP ranks like ``DistributedSampler``.

    Lightning calls ``set_epoch`` each epoch and leaves a ``DistributedSampler`` in place under DDP.
    With ``reseed`` (default) iterating also re-seeds the process RNGs from (seed, epoch, rank), so
    whatever draws random numbers during the epoch (augmentation in the main process, dropout) starts
    from the same state in a fresh and in a resumed run. Give the DataLoader ``generator=sampler.generator``
    and its worker processes are seeded from (seed, epoch, rank) too.

    ``passes`` > 1 makes one epoch that many passes over the data, each in its own order (pass 0 is the
    order of a one-pass epoch): a tiny training set then pays Lightning's per-epoch cost (hooks,
    validation, checkpoint checks, about 20 ms on 2 CPU cores) once per several optimizer steps.
    """

    def __init__(self, dataset: Dataset, seed: int = 0, epoch: int = 0, reseed: bool = True, passes: int = 1) -> None:
        world, rank = _dist_world()
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=int(seed), drop_last=False)
        self.passes = max(1, int(passes))
        self.num_samples = math.ceil(self.passes * len(dataset) / self.num_replicas)  # type: ignore[arg-type]
        self.total_size = self.num_samples * self.num_replicas
        self.reseed = reseed
        self.generator = torch.Generator()
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.generator.manual_seed(derived_seed(self.seed, self.epoch, self.rank, 2))

    def __iter__(self) -> Iterator[int]:
        if self.reseed:
            seed_process(derived_seed(self.seed, self.epoch, self.rank, 1))
        indices: list[int] = []
        for p in range(self.passes):
            g = torch.Generator()
            g.manual_seed(derived_seed(self.seed, self.epoch, 0, *([p] if p else [])))
            indices += torch.randperm(len(self.dataset), generator=g).tolist()  # type: ignore[arg-type]
        padding = self.total_size - len(indices)
        if padding > 0:  # every rank gets the same number of samples (as DistributedSampler does)
            indices += (indices * (padding // max(1, len(indices)) + 1))[:padding]
        return iter(indices[self.rank : self.total_size : self.num_replicas])
