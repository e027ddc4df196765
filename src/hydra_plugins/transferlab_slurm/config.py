"""The launcher's config node ``hydra/launcher=transferlab_slurm``: submitit's SLURM options, with
``gpus_per_node``, ``tasks_per_node`` and ``nodes`` that may say ``auto`` (derived from ``trainer``)."""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class TransferlabSlurmConf(SlurmQueueConf):
    """``SlurmQueueConf`` whose per-run resources may be ``auto`` (see ``launcher.derived_resources``)."""

    _target_: str = "hydra_plugins.transferlab_slurm.launcher.TransferlabSlurmLauncher"
    gpus_per_node: Any = "auto"
    tasks_per_node: Any = "auto"
    nodes: Any = "auto"


ConfigStore.instance().store(group="hydra/launcher", name="transferlab_slurm", node=TransferlabSlurmConf,
                             provider="transferlab")
