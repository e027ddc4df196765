"""The sweeper's config node ``hydra/sweeper=optuna_study`` (see ``sweeper.SharedOptunaSweeper``)."""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class SamplerConf:
    """An Optuna sampler, built once per trial with ``seed`` mixed with the trial's number."""

    _target_: str = "optuna.samplers.TPESampler"
    _partial_: bool = True
    seed: int = 0


@dataclass
class OptunaStudyConf:
    _target_: str = "hydra_plugins.transferlab_optuna.sweeper.SharedOptunaSweeper"
    sampler: Any = field(default_factory=SamplerConf)
    direction: str = "maximize"
    study_name: Optional[str] = None
    # null: sqlite:///<sweep dir>/optuna.db; an Optuna RDB URL (postgresql://…, mysql://…);
    # journal:<path> for an append-only journal file on a shared file system (NFS)
    storage: Optional[str] = None
    n_trials: int = 20
    n_jobs: int = 1  # trials launched at once by this worker (a joblib or SLURM launcher runs them in parallel)
    heartbeat_s: float = 30.0  # a running trial's worker says it is alive this often
    grace_s: float = 120.0  # no heartbeat for this long: the trial's worker is gone, another worker runs it again
    poll_s: float = 5.0  # how often a worker with nothing to ask waits for the others' trials
    params: Optional[dict[str, str]] = None
    # stop weak trials early: null or none (never), median, successive_halving, hyperband (Optuna's defaults),
    # or a pruner's config, {_target_: optuna.pruners.MedianPruner, n_startup_trials: 5}; steps are epochs trained
    pruner: Any = None


ConfigStore.instance().store(group="hydra/sweeper", name="optuna_study", node=OptunaStudyConf, provider="transferlab")
