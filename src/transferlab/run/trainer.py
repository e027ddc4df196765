"""The Lightning Trainer of a run, from ``cfg.trainer`` (Lightning's own argument names) and the run's budget
(``run.budget``: how many epochs)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback

from transferlab.config.plain import plain
from transferlab.errors import ConfigError
from transferlab.run.budget import budget_steps, planned_epochs, steps_per_epoch
from transferlab.run.checkpoints import SafeCheckpointIO
from transferlab.run.context import is_multirun
from transferlab.run.distributed import refuse_relaunch_in_multirun

log = logging.getLogger("transferlab")

#: the fewest points a run's per-step curves (loss, LR) get, when it has steps enough (see :func:`log_interval`)
CURVE_POINTS = 100
#: Lightning's ``log_every_n_steps`` when the trainer config leaves it unset
LIGHTNING_LOG_EVERY = 50


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX flags), where bf16-mixed pays off.

    False where /proc/cpuinfo is missing. (No torch.backends.mkldnn here: a non-module object in
    sys.modules, it breaks cloudpickle of this module run as __main__ by submitit.)
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(precision: Any) -> torch.dtype | None:
    """The autocast dtype a Lightning ``trainer.precision`` computes in (None for full precision)."""
    p = str(precision)
    if p.startswith("bf16"):
        return torch.bfloat16
    if p.startswith("16"):
        return torch.float16
    return None


def device_of(cfg: DictConfig) -> torch.device:
    """The device the run computes on: CUDA when the trainer asks for a GPU (or ``auto``) and there is one."""
    wants_gpu = str(cfg.trainer.get("accelerator", "auto")) in ("gpu", "cuda", "auto")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def log_interval(configured: int | None, steps: int) -> int:
    """Steps between the training rows a run logs (loss, LR): ``trainer.log_every_n_steps`` (Lightning's
    default when unset), but at most ``steps // CURVE_POINTS``, so a short run's curves still have
    ``CURVE_POINTS`` points: every optimizer step in a run of fewer than twice that many steps."""
    return max(1, min(int(configured or LIGHTNING_LOG_EVERY), steps // CURVE_POINTS))


def trainer_arguments(cfg: DictConfig, n_train: int, checkpoints: bool, reload_dataloaders: bool, solved_epochs: int = 0) -> dict[str, Any]:
    """``cfg.trainer`` with the run's budget and the package's fixed choices filled in.

    The epochs come from the run's budget (``planned_epochs``); ``max_validations`` then spaces
    validation out (every k-th epoch) and ``log_interval`` the training rows (``log_every_n_steps``).
    ``solved_epochs``: leading epochs of the budget that a solve replaced (lp_ft's probe by L-BFGS).
    """
    kwargs = plain(cfg.trainer)
    assert isinstance(kwargs, dict)
    by_budget = budget_steps(cfg.get("budget"), n_train) is not None
    if by_budget or (kwargs.get("max_epochs") and int(kwargs["max_epochs"]) > 0):
        kwargs["max_epochs"] = max(1, planned_epochs(cfg, n_train) - int(solved_epochs))
    if kwargs.get("max_epochs") and int(kwargs["max_epochs"]) > 0:  # loss and LR curves however short the run
        steps = int(kwargs["max_epochs"]) * steps_per_epoch(cfg, n_train)
        kwargs["log_every_n_steps"] = log_interval(kwargs.get("log_every_n_steps"), steps)
    if reload_dataloaders:  # StagedDataModule: from cached features to images
        kwargs["reload_dataloaders_every_n_epochs"] = 1
    max_validations = cfg.get("max_validations")
    if max_validations and kwargs.get("max_epochs") and "check_val_every_n_epoch" not in kwargs:
        kwargs["check_val_every_n_epoch"] = max(1, math.ceil(int(kwargs["max_epochs"]) / int(max_validations)))
    kwargs.setdefault("enable_checkpointing", checkpoints)
    if str(kwargs.get("accelerator")) == "cpu" and str(kwargs.get("precision", "")).startswith("bf16") and not cpu_has_bf16():
        log.warning(
            "trainer.precision=%s on a CPU without native bfloat16 instructions: slower than 32-bit here. "
            "Fix: trainer.precision=32-true.", kwargs["precision"]
        )
    # checkpoints are written atomically and read with weights_only=True (no pickled code runs)
    kwargs.setdefault("plugins", [SafeCheckpointIO()])
    if SLURMEnvironment.detect():  # requeue is submitit's (run.preemption): Lightning's own would requeue a second time
        kwargs["plugins"] = [*kwargs["plugins"], SLURMEnvironment(auto_requeue=False)]
    # the training sampler shards itself over DDP ranks (order fixed by seed and epoch); evaluation runs
    # the whole val/test split on every rank, so its metrics equal a single device's (no padded repeats)
    kwargs.setdefault("use_distributed_sampler", False)
    return kwargs


def make_trainer(
    cfg: DictConfig,
    out_dir: Path,
    callbacks: list[Callback],
    logger: Any,
    n_train: int,
    checkpoints: bool = True,
    reload_dataloaders: bool = False,
    solved_epochs: int = 0,
) -> pl.Trainer:
    """A Lightning Trainer from ``cfg.trainer``; a bad argument is a ConfigError that names it."""
    kwargs = trainer_arguments(cfg, n_train, checkpoints, reload_dataloaders, solved_epochs)
    try:
        trainer = pl.Trainer(
            **kwargs, callbacks=callbacks, logger=logger if logger is not None else False, default_root_dir=str(out_dir)
        )
    except TypeError as err:
        raise ConfigError(f"trainer: {err}. Use Lightning Trainer argument names, e.g. trainer.max_epochs=5.") from err
    except (ValueError, pl.utilities.exceptions.MisconfigurationException) as err:
        raise ConfigError(f"trainer: {err}") from err
    if is_multirun():
        refuse_relaunch_in_multirun(trainer, cfg.trainer.get("strategy"))
    return trainer


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op CPU threads (None: unchanged), then restore the previous count.

    A head on cached features is made of tiny ops: splitting them across threads costs more than it
    saves, and when other processes share the cores each op waits for a descheduled thread (a 20-epoch
    linear probe took 35 s with 2 threads and 3-6 s with 1 on a loaded 2-core machine).
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
