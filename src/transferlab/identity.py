"""What identifies a run's results: the resolved config without the keys that cannot change them.

``RESULT_NEUTRAL_KEYS`` is the one table of those keys. It serves the config hash (a completed run of
the same hash is skipped), the feature-cache and source-weights keys, and Hydra's folder names
(``hydra.job.config.override_dirname.exclude_keys`` in ``conf/config.yaml`` must list exactly
``RESULT_NEUTRAL_KEYS`` plus ``FOLDER_NAMING_KEYS``; a test checks it).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: dotted config keys that never change a run's numbers: logging, where files go, checkpoint cadence,
#: progress output, and speed settings that compute the same values (a key removes its whole sub-tree)
RESULT_NEUTRAL_KEYS: tuple[str, ...] = (
    "logger",
    "logger.mode",
    "logger.project",
    "logger.entity",
    "paths",
    "paths.runs_dir",
    "paths.cache_dir",
    "keep_checkpoints",
    "checkpoint_every_s",
    "signal_finish_epoch_s",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "backbone.compile",
    "backbone.grad_checkpointing",
    "dataset.num_workers",
    "dataset.pin_memory",
    "dataset.persistent_workers",
)

#: command-line keys that name the sweep's own folder (or the launcher), so they stay out of a run's
#: sub-folder name; they do change what runs and so are part of the hash
FOLDER_NAMING_KEYS: tuple[str, ...] = ("experiment", "sweep", "sweep_name", "hydra.launcher.n_jobs")


def resolved(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config as a plain, fully resolved dict."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return json.loads(json.dumps(cfg, default=str))


def without_neutral_keys(plain: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A copy of a resolved config (or of its sub-tree at ``prefix``, e.g. ``"dataset"``) without
    ``RESULT_NEUTRAL_KEYS``."""
    out = copy.deepcopy(dict(plain))
    lead = f"{prefix}." if prefix else ""
    for dotted in RESULT_NEUTRAL_KEYS:
        if not dotted.startswith(lead):
            continue
        *parents, leaf = dotted[len(lead) :].split(".")
        node: Any = out
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def digest(parts: Any, length: int = 20) -> str:
    """SHA-256 (first ``length`` hex digits) of ``parts`` as canonical JSON: the package's cache keys."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:length]


def config_hash(cfg: DictConfig | Mapping[str, Any]) -> str:
    """The run's identity: a digest of the resolved config without ``RESULT_NEUTRAL_KEYS``."""
    return digest(without_neutral_keys(resolved(cfg)), length=16)
