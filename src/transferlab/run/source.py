"""The weights a run starts from: ``backbone.weights`` resolved to None, ``"hub"`` or a file; ``source``
is the experiment's source task, a backbone trained once on demand and cached as safetensors keyed by its
config. Resolved before assembly, so assembly never trains anything."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save

from transferlab.config.plain import plain
from transferlab.errors import ConfigError, WeightsError
from transferlab.files import atomic_write, file_lock
from transferlab.data.registry import data_fingerprint
from transferlab.identity import digest, resolved, without_neutral_keys
from transferlab.record import BASELINE_STRATEGY
from transferlab.run.assembly import assemble, plan_run
from transferlab.run.checkpoints import LAST, LastCheckpoint
from transferlab.run.context import cache_dir
from transferlab.run.trainer import make_trainer
from transferlab.strategies.base import FreezePolicy

log = logging.getLogger(__name__)


def resolve_weights(cfg: DictConfig, policy: FreezePolicy) -> str | None:
    """``None`` (random init), ``"hub"``, or the path of a weights file (``source`` is trained on demand)."""
    weights = cfg.backbone.get("weights")
    if not policy.pretrained or weights in (None, "null", "none", "random"):
        return None
    if weights == "hub":
        return "hub"
    if weights == "source":
        return str(source_weights(cfg, cache_dir(cfg)))
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"backbone.weights={weights!r}: file not found. Give the path of a .safetensors or .pth file, "
            "or use backbone.weights=null (random init), hub (timm pretrained) or source (experiment source task)."
        )
    return str(path.resolve())


def source_seed(cfg: DictConfig) -> int | None:
    """The seed the source task trains with, ``source.seed`` (``source.seed: ${seed}`` makes every seed of a
    study start from its own source model); None without a ``source:`` block."""
    src = cfg.get("source")
    return None if src is None else int(src.get("seed", 0))


def source_config(cfg: DictConfig) -> DictConfig:
    """A full run config that trains ``cfg.backbone`` from scratch on ``cfg.source.dataset``.

    The source task trains on its whole training split (``fraction`` 1.0), whatever the target's size, and
    ``subset_seed`` is left out of its dataset: no seed can draw another source training set, and the
    source-weights key (:func:`source_key`) does not depend on a key that cannot change the weights."""
    if "source" not in cfg or cfg.source is None:
        raise ConfigError(
            "backbone.weights=source needs a `source:` block (dataset, max_epochs, lr…) in the config; "
            "use experiment=digits_transfer, or backbone.weights=null|hub|/path/to/weights.safetensors."
        )
    src = cfg.source
    values = plain(cfg)
    assert isinstance(values, dict)
    values.update(
        dataset={**{k: v for k, v in values["source"]["dataset"].items() if k != "subset_seed"}, "fraction": 1.0, "per_class": None},
        strategy={"name": BASELINE_STRATEGY},  # the source model trains from random initialisation
        head={"name": "linear", "hidden": [], "dropout": 0.0, "activation": "relu", "pool": None},
        optimizer={**values["optimizer"], **{k: src[k] for k in ("lr", "weight_decay") if k in src}},
        logger={"name": "none"},
        seed=source_seed(cfg),
        keep_checkpoints=False,
        # the source task's budget is source.max_epochs: the target's step budget (budget=by_size under
        # sweep=fair_x_fraction) must not reach it, nor is it in source_key (it once gave the glyph model
        # 4 epochs instead of 8: val/acc 0.967 instead of 0.994, under the same cache key)
        budget={"rule": "epochs"},
        min_train_steps=0,
    )
    values["backbone"] = {**values["backbone"], "weights": None}
    # one process, one device: a DDP target run must not launch a DDP source run inside each rank
    values["trainer"] = {**values["trainer"], "max_epochs": int(src.max_epochs), "devices": 1, "num_nodes": 1, "strategy": "auto"}
    values.pop("source", None)
    return OmegaConf.create(values)


def source_key(src_cfg: DictConfig) -> dict[str, Any]:
    """What decides the source checkpoint: backbone, data (its config and its fingerprint: the files of a
    folder or manifest source can change under the same config), optimisation, epochs and seed."""
    dataset = without_neutral_keys(resolved(src_cfg.dataset), prefix="dataset")
    return {
        "backbone": without_neutral_keys(resolved(src_cfg.backbone), prefix="backbone"),
        "dataset": dataset,
        "data": digest(data_fingerprint(dataset)),
        "optimizer": resolved(src_cfg.optimizer),
        "max_epochs": src_cfg.trainer.max_epochs,
        "precision": src_cfg.trainer.get("precision"),
        "seed": src_cfg.seed,
    }


def source_weights_path(cfg: DictConfig, cache: Path) -> Path:
    """Where the source-task weights of ``cfg`` are cached (whether or not they are there yet)."""
    return Path(cache) / "source" / f"{cfg.backbone.name}-{digest(source_key(source_config(cfg)))}.safetensors"


def source_weights(cfg: DictConfig, cache: Path) -> Path:
    """Path of the source-task backbone weights; trains them first when the cache lacks them.

    A file lock makes concurrent jobs wait for one training instead of all training at once.
    """
    path = source_weights_path(cfg, cache)
    if path.is_file():
        return path
    src_cfg = source_config(cfg)
    folder = path.parent
    with file_lock(folder / f"{path.stem}.lock"):
        if not path.is_file():
            log.info("training the source model (%s on %s), cached at %s", cfg.backbone.name, src_cfg.dataset.name, path)
            metrics = fit_source(src_cfg, path, folder / f"{path.stem}-run")
            (folder / f"{path.stem}.json").write_text(json.dumps({"key": source_key(src_cfg), "metrics": metrics}, indent=2, default=str))
    return path


def fit_source(src_cfg: DictConfig, weights_path: Path, work_dir: Path) -> dict[str, float]:
    """Train the source-task model from scratch and save its backbone (no head) as safetensors."""
    run = assemble(src_cfg, plan_run(src_cfg), weights=None)
    (work_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    last_ckpt = LastCheckpoint(work_dir / "checkpoints", every_s=float(src_cfg.get("checkpoint_every_s") or 0))
    trainer = make_trainer(src_cfg, work_dir, [run.policy, last_ckpt], logger=None, n_train=run.n_train, checkpoints=False)
    last = work_dir / "checkpoints" / LAST
    trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=str(last) if last.is_file() else None, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    state = {k: v.detach().cpu().contiguous() for k, v in run.module.backbone.state_dict().items()}
    data = save(state)
    atomic_write(weights_path, lambda f: f.write(data), mode=0o644)  # the shared source cache is readable by all
    shutil.rmtree(work_dir, ignore_errors=True)
    return metrics

