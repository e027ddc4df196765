"""How a run shows on the W&B dashboard: its group (its sweep's folder), its name and tags (what tells it
apart from the sweep's other runs) and the summary entries the report compares.

- **Group**: the folder that holds the run's folder, relative to ``paths.runs_dir`` (``conf/config.yaml``'s
  ``hydra.sweep.dir`` and ``hydra.run.dir``): ``digits_transfer/fair_x_fraction`` for a sweep,
  ``default/multirun`` for a multirun without ``sweep=``, ``default/single`` for single runs. A run folder
  outside ``paths.runs_dir`` (a ``hydra.sweep.dir`` of one's own, ``train(cfg, out_dir)``):
  ``<experiment>/<sweep_name>``, or ``<experiment>/<the folder's name>`` outside a sweep.
- **Name**: ``<strategy>-<size>-s<seed>``, the weights when pretrained (``source``, ``hub``, a file as
  ``name-digest``), then each grid hyperparameter (a key of the record's ``hparams``) the job's overrides
  set, as ``key=value`` with the key's last part: ``finetune-f0.1-s0-source-lr=0.003-backbone_lr_scale=0.1``.
  When other overrides name the run's folder too (``transferlab.naming``: ``backbone.name=…``,
  ``budget.steps=…``), a digest of them ends the name. Two jobs of a sweep have different folders, so
  different names.
- **Tags**: ``strategy:``, ``fraction:`` or ``per_class:``, ``seed:``, ``weights:``, ``backbone:``,
  ``dataset:`` and one ``key:value`` per override of the folder name besides those.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from transferlab.identity import absolute_path, digest, is_path
from transferlab.naming import SHORT, naming_items, path_label
from transferlab.record import RunRecord
from transferlab.redaction import redact_text

#: override keys whose values every name already shows (strategy, size, seed, weights)
SHOWN_KEYS = frozenset({"strategy", "dataset.fraction", "dataset.per_class", "seed", "backbone.weights"})
#: the record's fields in each run's W&B summary: what the report compares runs by (the size, the draw,
#: the budget and the cost); ``selected`` joins them when a report selects (``report.wandb_runs``)
SUMMARY_FIELDS: tuple[str, ...] = (
    "n_train", "fraction", "per_class", "seed", "subset_seed", "draw", "source_seed", "weights",
    "train_time_s", "feature_time_s", "epochs", "steps", "trainable_params", "trainable_params_start", "total_params",
)
#: W&B's longest tag
MAX_TAG = 64


def wandb_group(cfg: DictConfig, out_dir: Path, launch_dir: Path) -> str:
    """The run's W&B group: its sweep's folder (see the module doc)."""
    folder = Path(out_dir).resolve().parent
    runs_dir = Path(absolute_path(str(cfg.paths.runs_dir), launch_dir)).resolve()
    if folder.is_relative_to(runs_dir) and folder != runs_dir:
        return folder.relative_to(runs_dir).as_posix()
    return f"{cfg.experiment_name}/{cfg.get('sweep_name') or folder.name}"


@dataclass(frozen=True)
class Distinguishing:
    """The overrides that name a run's folder, less those every name shows, each as ``key=value`` with the
    key's last part (``optimizer.lr=0.003`` → ``lr=0.003``)."""

    hparams: list[str]  # the grid hyperparameters (keys of the record's ``hparams``)
    others: list[str]  # the rest (``name=test_resnet``, ``steps=8``…)


def distinguishing(overrides: list[str], launch_dir: Path, hparams: Mapping[str, Any] | None) -> Distinguishing:
    """What tells the job apart in its sweep, from its command-line ``overrides`` (see :class:`Distinguishing`)."""
    # secrets masked: W&B shows names and tags to everyone who sees the project
    items = {k: redact_text(v) for k, v in naming_items(overrides, str(launch_dir)).items() if k not in SHOWN_KEYS}
    tunable = set(hparams or {})
    return Distinguishing([_short(v) for k, v in items.items() if k in tunable],
                          [_short(v) for k, v in items.items() if k not in tunable])


def _short(item: str) -> str:
    """``a.b.c=value`` as ``c=value`` (an item without a value, ``~a.b``, as ``~b``)."""
    key, sep, value = item.partition("=")
    deleted = "~" if key.startswith("~") else ""
    return deleted + key.lstrip("+~").rsplit(".", 1)[-1] + sep + value


def weights_label(weights: str | None) -> str:
    """The weights as a name shows them: ``source``, ``hub``, a file as ``name-digest``, ``none``."""
    if weights is None:
        return "none"
    return path_label(weights) if is_path(weights) else str(weights)


def run_name(record: RunRecord, items: Distinguishing) -> str:
    """``<strategy>-<size>-s<seed>[-<weights>][-key=value…][-<digest of the other overrides>]`` (see the module doc)."""
    parts = [str(record.strategy), record.size.tag, f"s{record.seed}"]
    if record.weights is not None:
        parts.append(weights_label(record.weights))
    others = [digest(items.others, SHORT)] if items.others else []
    return "-".join([*parts, *items.hparams, *others])


def run_tags(record: RunRecord, items: Distinguishing) -> list[str]:
    """The run's W&B tags (see the module doc), each cut to W&B's 64 characters."""
    size = record.size
    value = size.fraction if size.kind == "fraction" else size.per_class
    tags = [f"strategy:{record.strategy}", f"{size.kind}:{value}", f"seed:{record.seed}",
            f"weights:{weights_label(record.weights)}", f"backbone:{record.backbone}", f"dataset:{record.dataset}",
            *(item.replace("=", ":", 1) for item in [*items.hparams, *items.others])]
    return [tag[:MAX_TAG] for tag in tags]


def summary_entries(record: RunRecord) -> dict[str, Any]:
    """The record's ``SUMMARY_FIELDS`` that are set, for the run's W&B summary."""
    return {key: value for key in SUMMARY_FIELDS if (value := getattr(record, key)) is not None}
