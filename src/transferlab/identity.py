"""What identifies a run's results: the resolved config, its paths absolute, without the keys that cannot
change them, and the fingerprint of the data it reads (``run.inputs``).

``RESULT_NEUTRAL_KEYS`` is the one table of those keys. It serves the config hash (a completed run of
the same hash is skipped), the feature-cache and source-weights keys, and the run folder names
(``transferlab.naming``, which also leaves out ``FOLDER_NAMING_KEYS``). ``PATH_KEYS`` is the one table of
keys whose values are paths.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.config.plain import plain

#: dotted config keys that never change a run's numbers: logging, where files go, checkpoint cadence,
#: progress output, and speed settings that compute the same values (a key removes its whole sub-tree).
#: ``rung_fraction`` is here because a rung stops a run partway through the same schedule: the run it pauses
#: is the same run (it resumes from the rung), and its record says where it stopped (``paused``/``pruned``),
#: so a stopped run is never taken for a completed one. ``optuna_trial`` names the Optuna trial a run reports
#: to (``run.pruning``), not what it computes: a retried trial (another number) resumes in the same folder.
RESULT_NEUTRAL_KEYS: tuple[str, ...] = (
    "rung_fraction",
    "optuna_trial",
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

#: dotted config keys whose values are file-system paths: made absolute against the folder the command was
#: launched from before a run is hashed or named, so a relative path names the same files in every job
PATH_KEYS: tuple[str, ...] = ("dataset.root", "dataset.path", "source.dataset.root", "source.dataset.path", "backbone.weights")
#: values of a path key that are choices, not paths (``backbone.weights``: see ``run.source``), or unset
NOT_PATHS: tuple[str, ...] = ("", "???", "null", "none", "random", "hub", "source")


def is_path(value: Any) -> bool:
    """Whether a value of a ``PATH_KEYS`` key names a file or folder (not a choice such as ``hub``)."""
    return isinstance(value, str) and value.strip().lower() not in NOT_PATHS


def absolute_path(value: str, base: str | Path) -> str:
    """``value`` (``~`` expanded) as an absolute, normalised path, a relative one taken against ``base``.
    Symbolic links are left as they are: resolving them costs a system call per path component."""
    return os.path.normpath(os.path.join(str(base), os.path.expanduser(value)))


def with_absolute_paths(cfg: DictConfig, base: str | Path) -> DictConfig:
    """A copy of ``cfg`` whose ``PATH_KEYS`` paths are absolute, relative ones taken against ``base``."""
    out = copy.deepcopy(cfg)
    for key in PATH_KEYS:
        value = OmegaConf.select(out, key, default=None, throw_on_missing=False)
        if is_path(value):
            OmegaConf.update(out, key, absolute_path(value, base), merge=False)
    return out


def resolved(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config as a plain, fully resolved dict."""
    if isinstance(cfg, DictConfig):
        return plain(cfg)  # type: ignore[no-any-return]
    return json.loads(json.dumps(cfg, default=str))  # a mapping: JSON's values, as a record holds them


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


def config_hash(cfg: DictConfig | Mapping[str, Any], inputs: str | None) -> str:
    """The run's identity: a digest of the resolved config without ``RESULT_NEUTRAL_KEYS`` and of ``inputs``,
    the digest of the data the run reads (``run.inputs``). ``inputs=None`` gives the hash records had before
    they fingerprinted their data (``result.json`` without ``data_fingerprint``)."""
    config = without_neutral_keys(resolved(cfg))
    return digest(config if inputs is None else {"config": config, "inputs": inputs}, length=16)
