"""One transfer-learning run: ``train(cfg) -> metrics``, and the ``transferlab-train`` Hydra app over ``conf/``."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import timm
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback

from transferlab import __version__
from transferlab.checkpoints import BEST, LAST, BestWeights, LastCheckpoint
from transferlab.backbone import check_model_name, data_config
from transferlab.data.loaders import ImageDataModule, SplitsDataModule, loader_settings
from transferlab.data.registry import load_splits
from transferlab.data.splits import subsample, train_selection
from transferlab.data.transforms import build_transform
from transferlab.errors import ConfigError, TransferlabError, WeightsError
from transferlab.features.cache import cached_features, state_digest
from transferlab.features.datamodules import StagedDataModule, TensorDataModule
from transferlab.model import TransferModule
from transferlab.reproducible import DistributedSync, SafeCheckpointIO, check_checkpoint_fits
from transferlab.results import (
    RESULT_FILE, atomic_write, config_hash, is_completed, read_result, redact, redact_text, redacted_argv, resolved, write_json_atomic,
)
from transferlab.strategies import FreezePolicy, build_policy
from transferlab.tracking import build_logger, finish_wandb, wandb_info, wandb_summary

log = logging.getLogger("transferlab")

#: the run's exact training examples (indices into the training split, file paths), beside result.json
TRAIN_INDICES_FILE = "train_indices.json"

# Frozen blocks are in eval mode on purpose (their BatchNorm statistics must not move).
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


@dataclass
class Run:
    """Everything one run trains and evaluates, built from a config."""

    module: TransferModule
    datamodule: SplitsDataModule | StagedDataModule
    policy: FreezePolicy
    weights: str | None
    n_train: int
    selection: dict[str, Any] | None = None  # the exact training examples (train_indices.json)
    features_cached: bool = False
    feature_cache_hit: bool = False
    feature_time_s: float = 0.0


def cache_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.cache_dir).expanduser().resolve()


def resolve_weights(cfg: DictConfig, policy: FreezePolicy) -> str | None:
    """``None`` (random init), ``"hub"``, or the path of a weights file (``source`` is trained on demand)."""
    weights = cfg.backbone.get("weights")
    if not policy.pretrained or weights in (None, "null", "none", "random"):
        return None
    if weights == "hub":
        return "hub"
    if weights == "source":
        from transferlab.source import source_weights

        return str(source_weights(cfg, cache_dir(cfg)))
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"backbone.weights={weights!r}: file not found. Give the path of a .safetensors or .pth file, "
            "or use backbone.weights=null (random init), hub (timm pretrained) or source (experiment source task)."
        )
    return str(path.resolve())


def _plain(node: Any) -> dict[str, Any]:
    """A config mapping (or None) as a plain dict."""
    if node is None:
        return {}
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)  # type: ignore[return-value]


def _device(cfg: DictConfig) -> torch.device:
    wants_gpu = str(cfg.trainer.get("accelerator", "auto")) in ("gpu", "cuda", "auto")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def autocast_dtype(precision: Any) -> torch.dtype | None:
    """The autocast dtype a Lightning ``trainer.precision`` computes in (None for full precision)."""
    p = str(precision)
    if p.startswith("bf16"):
        return torch.bfloat16
    if p.startswith("16"):
        return torch.float16
    return None


def build_run(cfg: DictConfig) -> Run:
    """Validate the config, then build policy, data and model (training the source model if needed).

    Cheap checks (names, fractions, class counts) run before anything slow.
    """
    policy = build_policy(OmegaConf.to_container(cfg.strategy, resolve=True))  # type: ignore[arg-type]
    check_model_name(cfg.backbone.name)
    dataset_cfg = _plain(cfg.dataset)
    splits = load_splits(dataset_cfg)
    train_indices = subsample(
        splits.train.labels, cfg.dataset.get("fraction"), cfg.dataset.get("per_class"), cfg.dataset.split_seed, splits.class_names
    )
    cache_wanted = bool(cfg.strategy.get("cache_features", False))
    all_cached = cache_wanted and policy.frozen_backbone  # linear_probe: every epoch on cached features
    augment, mixup = _plain(cfg.dataset.get("augment")), _plain(cfg.dataset.get("mixup"))
    if all_cached and (augment or mixup):
        warnings.warn(
            f"dataset.augment / dataset.mixup are ignored: strategy {cfg.strategy.name} trains on cached features, "
            "computed once without augmentation. Set strategy.cache_features=false to augment.",
            stacklevel=2,
        )
        augment, mixup = {}, {}
    weights = resolve_weights(cfg, policy)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = TransferModule(
        backbone=cfg.backbone.name,
        num_classes=len(splits.class_names),  # = dataset.num_classes, checked by load_splits (null: from the data)
        in_chans=int(cfg.backbone.in_chans),
        input_size=cfg.dataset.get("input_size"),
        pool=cfg.head.get("pool"),
        weights=weights,
        head_hidden=list(cfg.head.hidden),
        head_dropout=float(cfg.head.dropout),
        head_activation=cfg.head.activation,
        optimizer=cfg.optimizer.name,
        lr=float(cfg.optimizer.lr),
        weight_decay=float(cfg.optimizer.weight_decay),
        optimizer_kwargs=_plain(cfg.optimizer.get("kwargs")),
        backbone_lr_scale=float(cfg.strategy.get("backbone_lr_scale", 1.0)),
        layer_decay=cfg.strategy.get("layer_decay"),
        scheduler=cfg.optimizer.scheduler,
        warmup_epochs=float(cfg.optimizer.warmup_epochs),
        label_smoothing=float(cfg.optimizer.get("label_smoothing", 0.0)),
        input_is_features=all_cached,
        channels_last=bool(cfg.backbone.get("channels_last", False)),
        compile=bool(cfg.backbone.get("compile", False)) and not all_cached,  # cached: the backbone runs once
        grad_checkpointing=bool(cfg.backbone.get("grad_checkpointing", False)),
        backbone_kwargs=_plain(cfg.backbone.get("kwargs")),
        mixup=mixup or None,
    )
    preprocess = data_config(module.backbone, cfg.dataset.get("input_size"), cfg.dataset.get("crop_pct"))
    in_chans = int(cfg.backbone.in_chans)
    eval_tf = build_transform(preprocess, in_chans, training=False)
    train_tf = build_transform(preprocess, in_chans, training=True, **augment) if augment else eval_tf
    if int(cfg.dataset.batch_size) < 1:
        raise ConfigError(f"dataset.batch_size={cfg.dataset.batch_size} must be ≥ 1 (e.g. 64).")
    preload = bool(cfg.dataset.get("preload", True))
    workers = {k: cfg.dataset.get(k, "auto") for k in ("num_workers", "pin_memory", "persistent_workers")}
    cuda = _device(cfg).type == "cuda"
    loader_kwargs = dict(
        batch_size=int(cfg.dataset.batch_size), seed=int(cfg.seed), **loader_settings(**workers, decode_on_the_fly=not preload or bool(augment), cuda=cuda)
    )
    images = ImageDataModule(splits, train_tf, eval_tf, train_indices, preload=preload, **loader_kwargs)
    # lp_ft / gradual: the leading epochs that train the head alone can run on cached features too
    staged_epochs = 0
    if cache_wanted and not all_cached:
        staged_epochs = policy.head_only_epochs(len(module.blocks), planned_epochs(cfg, len(train_indices)))
        if staged_epochs and (augment or mixup):
            warnings.warn(
                f"strategy {cfg.strategy.name}: its first {staged_epochs} epoch(s) train the head on cached features, "
                "without dataset.augment / dataset.mixup (they apply from then on). "
                "Set strategy.cache_features=false to augment those epochs too.",
                stacklevel=2,
            )
    use_cache = all_cached or staged_epochs > 0
    selection = train_selection(splits, train_indices, dataset_cfg)
    run = Run(module, images, policy, weights, n_train=len(train_indices), selection=selection, features_cached=use_cache)
    if use_cache:
        start = time.perf_counter()
        extract = {"channels_last": module.hparams.channels_last, "autocast_dtype": autocast_dtype(cfg.trainer.get("precision"))}
        key = {
            "backbone": cfg.backbone.name,
            "backbone_kwargs": module.hparams.backbone_kwargs,
            "pool": cfg.head.get("pool"),
            "in_chans": in_chans,
            # the weights as loaded: a file, the hub, or a seeded random init all hash by value
            "weights": state_digest(module.backbone),
            "timm": timm.__version__,
            "preprocess": preprocess,
            "extract": extract,
            # redacted: the key is stored in the cache file's metadata
            "dataset": redact({k: v for k, v in resolved(cfg.dataset).items() if k not in _NOT_FEATURES}),
        }
        if splits.file_backed:  # files can change under the same config: key on them too
            key["files"] = selection["data_fingerprint"]
        features, hit = cached_features(
            module.backbone, images.eval_datasets(), cache_dir(cfg) / "features", key, device=_device(cfg),
            num_workers=loader_kwargs["num_workers"] if splits.file_backed else 0, **extract,
        )
        tensors = loader_settings(**workers, decode_on_the_fly=False, cuda=cuda)
        cached = TensorDataModule(features, train_indices, batch_size=int(cfg.dataset.batch_size), seed=int(cfg.seed), **tensors)
        run.datamodule = cached if all_cached else StagedDataModule(cached, images, staged_epochs)
        run.feature_cache_hit, run.feature_time_s = hit, time.perf_counter() - start
    return run


#: dataset keys that do not change the cached features
_NOT_FEATURES = (
    "fraction", "per_class", "batch_size", "num_workers", "pin_memory", "persistent_workers", "augment", "mixup",
    "on_bad_file", "verify", "download", "preload",
)


class ParameterCounts(Callback):
    """Logs trainable / total parameter counts once training starts, after the freeze policy ran.

    The counts come from the policy (under DDP mask mode frozen parameters still require grad).
    """

    def __init__(self, policy: FreezePolicy) -> None:
        self.policy = policy
        self.at_start: tuple[int, int] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.at_start = self.policy.parameter_counts(pl_module)
        for logger in trainer.loggers:
            logger.log_metrics({"params/trainable": self.at_start[0], "params/total": self.at_start[1]}, step=0)


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


def planned_epochs(cfg: DictConfig, n_train: int) -> int:
    """``trainer.max_epochs``, raised so a small training set still gets ``min_train_steps`` optimizer steps.

    (-1 or null: no epoch limit; a large number stands in.)
    """
    max_epochs = cfg.trainer.get("max_epochs")
    if not max_epochs or int(max_epochs) < 0:
        return 10**6
    min_steps = int(cfg.get("min_train_steps") or 0)
    steps_per_epoch = math.ceil(n_train / int(cfg.dataset.batch_size))
    return max(int(max_epochs), math.ceil(min_steps / steps_per_epoch)) if min_steps > 0 else int(max_epochs)


def make_trainer(
    cfg: DictConfig,
    out_dir: Path,
    callbacks: list[Callback],
    logger: Any,
    n_train: int,
    checkpoints: bool = True,
    reload_dataloaders: bool = False,
) -> pl.Trainer:
    """A Lightning Trainer from ``cfg.trainer`` (its own argument names).

    With ``min_train_steps`` a small training set gets more epochs, so every size gets at least that
    many optimizer steps; ``max_validations`` then spaces validation out (every k-th epoch).
    """
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(kwargs, dict)
    if kwargs.get("max_epochs") and int(kwargs["max_epochs"]) > 0:
        kwargs["max_epochs"] = planned_epochs(cfg, n_train)
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
    # the training sampler shards itself over DDP ranks (order fixed by seed and epoch); evaluation runs
    # the whole val/test split on every rank, so its metrics equal a single device's (no padded repeats)
    kwargs.setdefault("use_distributed_sampler", False)
    try:
        trainer = pl.Trainer(
            **kwargs, callbacks=callbacks, logger=logger if logger is not None else False, default_root_dir=str(out_dir)
        )
    except TypeError as err:
        raise ConfigError(f"trainer: {err}. Use Lightning Trainer argument names, e.g. trainer.max_epochs=5.") from err
    except (ValueError, pl.utilities.exceptions.MisconfigurationException) as err:
        raise ConfigError(f"trainer: {err}") from err
    if _is_multirun() and _relaunches_command(trainer):
        raise ConfigError(
            f"trainer.strategy={cfg.trainer.get('strategy')} with {trainer.world_size} processes: Lightning starts the "
            "other processes by re-running this command, which inside a Hydra multirun (-m) re-runs the whole sweep in "
            "each of them, in lockstep only until one job fails on one process. Fix: run the jobs one at a time "
            "without -m, or use a Hydra launcher that starts one process per device (submitit on SLURM with "
            "tasks_per_node = trainer.devices), or trainer.devices=1."
        )
    return trainer


def _relaunches_command(trainer: pl.Trainer) -> bool:
    """Whether Lightning's DDP launcher will start the other ranks by re-running ``sys.argv``."""
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return (
        isinstance(launcher, _SubprocessScriptLauncher)
        and trainer.world_size > 1
        and not (environment is not None and environment.creates_processes_externally)
    )


def fit_source(src_cfg: DictConfig, weights_path: Path, work_dir: Path) -> dict[str, float]:
    """Train the source-task model from scratch and save its backbone (no head) as safetensors."""
    from safetensors.torch import save

    run = build_run(src_cfg)
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


def _record_base(cfg: DictConfig, cfg_hash: str) -> dict[str, Any]:
    strategy = cfg.strategy.name
    return {
        "status": "running",
        "experiment": cfg.experiment_name,
        "sweep": cfg.get("sweep_name"),
        "dataset": cfg.dataset.name,
        "backbone": cfg.backbone.name,
        "weights": None if strategy == "scratch" else cfg.backbone.get("weights"),
        "strategy": strategy,
        "head": cfg.head.name,
        "fraction": None if cfg.dataset.get("per_class") is not None else cfg.dataset.get("fraction"),
        "per_class": cfg.dataset.get("per_class"),
        "seed": int(cfg.seed),
        "config_hash": cfg_hash,
        "transferlab_version": __version__,
        "host": socket.gethostname(),
    }


def output_dir(cfg: DictConfig) -> Path:
    """The run's output folder: Hydra's, or ``cfg.paths.output_dir`` outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("paths", {}).get("output_dir"):
        return Path(cfg.paths.output_dir)
    raise ConfigError("no output folder: run through transferlab-train, or set paths.output_dir.")


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", os.environ.get("SLURM_PROCID", 0))))


def train(cfg: DictConfig, out_dir: Path | None = None) -> dict[str, float]:
    """Run one config end to end; write ``result.json``; return the final metrics.

    A completed run of the same config in ``out_dir`` is not run again; an interrupted one resumes from
    its last checkpoint. A failure writes a ``failed`` record with the error, then re-raises.
    """
    out_dir = Path(out_dir) if out_dir is not None else output_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_hash = config_hash(cfg)
    done = is_completed(out_dir, cfg_hash)
    if done is not None:
        log.info("already completed (config %s): %s", cfg_hash, out_dir / RESULT_FILE)
        return dict(done["metrics"])
    previous = read_result(out_dir)
    if previous and previous.get("status") == "completed":
        raise ConfigError(
            f"{out_dir} holds a completed run of another config (hash {previous.get('config_hash')}, this one {cfg_hash}). "
            "It is not overwritten. Fix: choose another hydra.run.dir (or hydra.sweep.dir), or move that folder away."
        )
    record = _record_base(cfg, cfg_hash)
    try:
        return _train(cfg, out_dir, record)
    except BaseException as err:
        if _rank() == 0:
            record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=8))
            write_json_atomic(out_dir / RESULT_FILE, record)
        raise


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


def _train(cfg: DictConfig, out_dir: Path, record: dict[str, Any]) -> dict[str, float]:
    ckpt_dir = out_dir / "checkpoints"
    state_file = out_dir / "run_state.json"
    if ckpt_dir.exists() and (read_json(state_file) or {}).get("config_hash") != record["config_hash"]:
        shutil.rmtree(ckpt_dir)  # checkpoints of another config: never resume from them
    if _rank() == 0:
        write_json_atomic(state_file, {"config_hash": record["config_hash"]})
    run = build_run(cfg)
    record.update(n_train=run.n_train, features_cached=run.features_cached, feature_cache_hit=run.feature_cache_hit)
    if _rank() == 0 and run.selection is not None:
        write_json_atomic(out_dir / TRAIN_INDICES_FILE, run.selection)
    tags = [f"strategy:{record['strategy']}", f"fraction:{record['fraction']}", f"backbone:{record['backbone']}", f"dataset:{record['dataset']}"]
    group = f"{cfg.experiment_name}/{cfg.get('sweep_name') or 'single'}"
    size = f"f{record['fraction']}" if record["fraction"] is not None else f"pc{record['per_class']}"
    run_name = f"{record['strategy']}-{size}-s{record['seed']}"
    with redacted_argv():  # W&B records the command line
        logger = build_logger(cfg.logger, out_dir, resolved(cfg), run_name, group, record["strategy"], tags) if _rank() == 0 else None
    record["wandb"] = wandb_info(logger)
    try:
        return _fit_and_test(cfg, out_dir, record, run, logger)
    except BaseException:
        finish_wandb(logger, exit_code=1)  # never left active: the next job of a multirun gets its own W&B run
        raise


def _fit_and_test(cfg: DictConfig, out_dir: Path, record: dict[str, Any], run: Run, logger: Any) -> dict[str, float]:
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    best = BestWeights(cfg.monitor, cfg.monitor_mode)
    last_ckpt = LastCheckpoint(
        ckpt_dir, every_s=float(cfg.get("checkpoint_every_s") or 0), save_final=bool(cfg.get("keep_checkpoints", False))
    )
    counts = ParameterCounts(run.policy)
    ddp = DistributedSync()
    callbacks = [run.policy, best, last_ckpt, counts, ddp]
    staged = isinstance(run.datamodule, StagedDataModule)
    trainer = make_trainer(cfg, out_dir, callbacks, logger, n_train=run.n_train, checkpoints=False, reload_dataloaders=staged)
    last = ckpt_dir / LAST
    resume = None
    if last.is_file():
        ckpt = check_checkpoint_fits(run.module, last)  # safe load; another backbone or class count fails here
        resume = str(last)
        log.info("resuming from %s (epoch %s done)", last, ckpt.get("epoch"))
        record["resumed_from_epoch"] = ckpt.get("epoch")
    record["resumed_from"] = resume
    start = time.perf_counter()
    with intra_op_threads(1 if run.features_cached and not staged else None):
        trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=resume, weights_only=True)
        train_time = time.perf_counter() - start + run.feature_time_s
        best.restore(run.module)  # test the weights of the best validation epoch
        tested = trainer.test(run.module, datamodule=run.datamodule, verbose=False)
    metrics = {k: float(v) for k, v in tested[0].items()}
    if best.best_score is not None:
        metrics[f"{cfg.monitor}_best"] = best.best_score
    if cfg.get("keep_checkpoints", False) and trainer.is_global_zero:
        torch.save(run.module.state_dict(), ckpt_dir / BEST)
    trainable, total = run.policy.parameter_counts(run.module)
    epochs = int(trainer.current_epoch)
    cached_epochs = 0
    if run.features_cached:
        cached_epochs = min(run.datamodule.feature_epochs, epochs) if staged else epochs
        if staged and trainer.world_size > 1:
            cached_epochs = 0  # StagedDataModule serves images under DDP
    if trainer.world_size > 1:
        record.update(world_size=trainer.world_size, ranks_in_sync=ddp.in_sync, ddp_mask_mode=run.policy.mask_mode)
    record.update(
        status="completed",
        metrics=metrics,
        trainable_params=trainable,
        total_params=total,
        trainable_params_start=counts.at_start[0] if counts.at_start else None,
        train_time_s=round(train_time, 3),
        feature_time_s=round(run.feature_time_s, 3),
        epochs=epochs,
        features_cached=cached_epochs > 0,
        cached_feature_epochs=cached_epochs,
        weights_path=run.weights,
        output_dir=str(out_dir),
    )
    if trainer.is_global_zero:
        record["wandb"] = wandb_summary(logger, metrics, out_dir / RESULT_FILE)
        write_json_atomic(out_dir / RESULT_FILE, record)
        if not cfg.get("keep_checkpoints", False):
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    return metrics


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def config_dir() -> str:
    """``conf/`` of this checkout (the package is installed editable), or ``$TRANSFERLAB_CONFIG_DIR``."""
    env = os.environ.get("TRANSFERLAB_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    return str(Path(__file__).resolve().parents[2] / "conf")


def redact_hydra_files() -> None:
    """Hydra saved the config and the command-line overrides in ``.hydra/`` (and a multirun's in
    ``multirun.yaml``): mask secrets in them."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    paths = []
    if hydra_cfg.output_subdir:
        paths += sorted((Path(hydra_cfg.runtime.output_dir) / str(hydra_cfg.output_subdir)).glob("*.yaml"))
    if _is_multirun():
        paths.append(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
    for path in paths:
        try:
            text = path.read_text()
            clean = redact_text(text)
            if clean != text:  # through a temporary file: parallel jobs may rewrite multirun.yaml at once
                atomic_write(path, lambda f: f.write(clean.encode()), mode=0o644)
        except OSError as err:
            log.warning("could not check %s for secrets: %s", path, err)


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    """Run ``train(cfg)``; return the optimised metric (for sweepers)."""
    if _rank() == 0:
        redact_hydra_files()
    try:
        metrics = train(cfg)
    except TransferlabError as err:
        rank = f"[rank {_rank()}] " if _rank() else ""
        print(f"transferlab: error: {rank}{err}", file=sys.stderr)
        if _is_multirun():
            return float("nan")  # this job failed (its result.json says so); the sweep goes on
        raise SystemExit(2) from None
    summary = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("test/"))
    if _rank() == 0:
        print(f"transferlab: done: {summary}")
    value = metrics.get(cfg.optimized_metric)
    return None if value is None else float(value)


def main() -> None:
    """Console entry point ``transferlab-train``."""
    if not Path(config_dir()).is_dir():
        print(
            f"transferlab: error: config folder {config_dir()} not found. Install the project editable from its "
            "checkout (`pip install -e .`) or set TRANSFERLAB_CONFIG_DIR=/path/to/conf.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
