"""The SLURM launcher: hydra-submitit-launcher's ``SlurmLauncher``, with

- resources that follow the trainer: ``gpus_per_node: auto`` asks for ``trainer.devices`` GPUs only for a
  GPU trainer (a CPU partition refuses any GPU request: ``sbatch: error: Invalid generic resource (gres)
  specification``), ``tasks_per_node: auto`` is ``trainer.devices`` (Lightning's SLURMEnvironment starts one
  training process per SLURM task) and ``nodes: auto`` is ``trainer.num_nodes``;
- cheap checks before anything is submitted: an integer ``trainer.devices``, ``sbatch`` on PATH, a
  partition that ``sinfo`` knows (with close names when it does not);
- one torch thread pool per job the size of its SLURM CPUs.

Requeue has one owner, submitit: SLURM sends ``USR2`` ``signal_delay_s`` before the time limit (and, with
``SlurmctldParameters=preempt_send_user_signal``, at preemption); submitit's handler calls this launcher's
``checkpoint`` (inherited: resubmit the same job), requeues it with ``scontrol requeue`` and counts time-outs
against ``max_num_timeout``. ``transferlab.run.preemption`` defers that handler to the end of the current
training batch, saves ``last.ckpt`` and records the run as interrupted first. Lightning's own SLURM
requeue is off (``SLURMEnvironment(auto_requeue=False)`` in ``transferlab.run.trainer``).
"""

from __future__ import annotations

import difflib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig

from transferlab.errors import ConfigError

log = logging.getLogger(__name__)

GPU_ACCELERATORS = ("gpu", "cuda")


def device_count(trainer: DictConfig) -> int:
    """``trainer.devices`` as the number of devices per node a SLURM job asks for; a ConfigError otherwise."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, int) and not isinstance(devices, bool):
        count = devices
    else:
        count = int(devices) if isinstance(devices, str) and devices.strip().isdigit() else -1
    if count < 1:
        raise ConfigError(
            f"trainer.devices={devices!r}: the SLURM launcher asks SLURM for a number of devices (and one task per "
            "device, as Lightning's SLURMEnvironment needs), so it must be an integer ≥ 1, not auto, -1 or a list. "
            "Fix: trainer.devices=1 (or the number of GPUs per node, e.g. trainer.devices=4)."
        )
    return count


def derived_resources(params: dict[str, Any], trainer: DictConfig) -> dict[str, Any]:
    """``params`` with each ``auto`` of gpus_per_node, tasks_per_node and nodes replaced from ``trainer``."""
    out = dict(params)
    auto = {k for k in ("gpus_per_node", "tasks_per_node", "nodes") if str(out.get(k)) == "auto"}
    if not auto:
        return out
    devices = device_count(trainer)
    if "gpus_per_node" in auto:  # None: no --gpus-per-node line at all
        out["gpus_per_node"] = devices if str(trainer.get("accelerator", "cpu")) in GPU_ACCELERATORS else None
    if "tasks_per_node" in auto:
        out["tasks_per_node"] = devices
    if "nodes" in auto:
        out["nodes"] = int(trainer.get("num_nodes") or 1)
    return out


def partitions() -> list[str] | None:
    """The cluster's partition names (``sinfo``), or None when sinfo cannot say."""
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return sorted({line.strip().rstrip("*") for line in proc.stdout.splitlines() if line.strip()})


def check_cluster(partition: str | None) -> None:
    """``sbatch`` on PATH and, when one is named, a partition the cluster has; ConfigError otherwise."""
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "hydra/launcher=slurm needs SLURM's sbatch on PATH, and there is none here. Fix: run on a SLURM login "
            "node (or `module load slurm`), start a one-machine SLURM with `scripts/slurm-local start`, or use "
            "hydra/launcher=local to run each job in its own process on this machine."
        )
    if partition in (None, ""):
        return
    known = partitions()
    if known is None or partition in known:
        return
    close = difflib.get_close_matches(str(partition), known, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"hydra.launcher.partition={partition!r} is not a partition of this cluster (sinfo lists: "
        f"{', '.join(known) or 'none'}).{hint} Fix: hydra.launcher.partition=NAME, or unset it for the default."
    )


class TransferlabSlurmLauncher(SlurmLauncher):
    """A SLURM array job per sweep, one task per run; see the module docstring."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        try:
            self.params = derived_resources(self.params, self.config.trainer)
            check_cluster(self.params.get("partition"))
        except ConfigError as err:  # as the CLI prints its own errors: the message and the fix, no traceback
            print(f"transferlab: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        return super().launch(job_overrides, initial_job_idx)

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """In the job: torch threads = the task's SLURM CPUs (without TaskPlugin affinity torch would use
        every core of the node, and jobs sharing a node slow each other 5-10x: docs/speed.md, Threads)."""
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus and "OMP_NUM_THREADS" not in os.environ:
            import torch

            torch.set_num_threads(max(1, int(cpus)))
        return super().__call__(*args, **kwargs)
