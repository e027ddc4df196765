"""The experiment's source task: a backbone trained once on demand, cached as safetensors keyed by its config."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.errors import ConfigError
from transferlab.files import file_lock
from transferlab.identity import digest

log = logging.getLogger(__name__)


def source_config(cfg: DictConfig) -> DictConfig:
    """A full run config that trains ``cfg.backbone`` from scratch on ``cfg.source.dataset``."""
    if "source" not in cfg or cfg.source is None:
        raise ConfigError(
            "backbone.weights=source needs a `source:` block (dataset, max_epochs, lr…) in the config; "
            "use experiment=digits_transfer, or backbone.weights=null|hub|/path/to/weights.safetensors."
        )
    src = cfg.source
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    plain.update(
        dataset={**plain["source"]["dataset"], "fraction": 1.0, "per_class": None},
        strategy={"name": "scratch"},
        head={"name": "linear", "hidden": [], "dropout": 0.0, "activation": "relu", "pool": None},
        optimizer={**plain["optimizer"], **{k: src[k] for k in ("lr", "weight_decay") if k in src}},
        logger={"name": "none"},
        seed=int(src.get("seed", 0)),
        keep_checkpoints=False,
    )
    plain["backbone"] = {**plain["backbone"], "weights": None}
    # one process, one device: a DDP target run must not launch a DDP source run inside each rank
    plain["trainer"] = {**plain["trainer"], "max_epochs": int(src.max_epochs), "devices": 1, "num_nodes": 1, "strategy": "auto"}
    plain.pop("source", None)
    return OmegaConf.create(plain)


def source_key(src_cfg: DictConfig) -> dict[str, Any]:
    """What decides the source checkpoint: backbone, data, optimisation, epochs and seed."""
    return {
        "backbone": {
            k: v
            for k, v in OmegaConf.to_container(src_cfg.backbone, resolve=True).items()  # type: ignore[union-attr]
            if k not in ("compile", "grad_checkpointing")  # speed only: the same weights either way
        },
        "dataset": OmegaConf.to_container(src_cfg.dataset, resolve=True),
        "optimizer": OmegaConf.to_container(src_cfg.optimizer, resolve=True),
        "max_epochs": src_cfg.trainer.max_epochs,
        "precision": src_cfg.trainer.get("precision"),
        "seed": src_cfg.seed,
    }


def source_weights(cfg: DictConfig, cache_dir: Path) -> Path:
    """Path of the source-task backbone weights; trains them first when the cache lacks them.

    A file lock makes concurrent jobs wait for one training instead of all training at once.
    """
    from transferlab.train import fit_source

    src_cfg = source_config(cfg)
    key = source_key(src_cfg)
    folder = Path(cache_dir) / "source"
    path = folder / f"{cfg.backbone.name}-{digest(key, 20)}.safetensors"
    if path.is_file():
        return path
    with file_lock(folder / f"{path.stem}.lock"):
        if not path.is_file():
            log.info("training the source model (%s on %s), cached at %s", cfg.backbone.name, src_cfg.dataset.name, path)
            metrics = fit_source(src_cfg, path, folder / f"{path.stem}-run")
            (folder / f"{path.stem}.json").write_text(json.dumps({"key": key, "metrics": metrics}, indent=2, default=str))
    return path


def source_metrics(weights_path: Path) -> Mapping[str, Any] | None:
    """The source run's validation metrics, when recorded beside its weights."""
    meta = weights_path.with_suffix(".json")
    try:
        return json.loads(meta.read_text()).get("metrics")
    except (OSError, ValueError):
        return None
