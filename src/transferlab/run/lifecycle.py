"""One run's life: skip it when completed, resume it when interrupted, record how it ended.

``train(cfg) -> metrics`` runs a config end to end and writes ``result.json`` (``transferlab.record``): a
``running`` record when it starts, the final one when it ends. Its identity (``config_hash``) covers the
config, its paths made absolute, and the fingerprint of its data (``run.inputs``), taken before anything loads.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from transferlab import __version__
from transferlab.config.plain import plain
from transferlab.config.schema import check_config
from transferlab.errors import ConfigError, TransferlabError
from transferlab.files import file_lock, read_json, write_json_atomic
from transferlab.identity import config_hash, resolved, with_absolute_paths
from transferlab.record import RESULT_FILE, RUN_LOCK, RunRecord, Status, is_completed, read_record, write_record
from transferlab.redaction import redact, redacted_argv
from transferlab.run.assembly import Run, assemble, plan_run
from transferlab.run.checkpoints import BEST, LAST, BestWeights, LastCheckpoint, check_checkpoint_fits
from transferlab.run.context import in_slurm_job, job_overrides, launch_dir, output_dir, rank
from transferlab.run.curves import curve_callbacks
from transferlab.run.dashboard import distinguishing, run_name, run_tags, summary_entries, wandb_group
from transferlab.run.distributed import DistributedSync
from transferlab.run.inputs import inputs_fingerprint, set_aside, what_changed
from transferlab.run.preemption import RunInterrupted, SignalStop, describe_interruption, is_interruption
from transferlab.run.pruning import TrialPruning, already_pruned, report_recorded
from transferlab.run.rungs import EPS, RungStop, rung_entry
from transferlab.run.probing import solve_head, wandb_entries
from transferlab.run.source import resolve_weights, source_seed
from transferlab.run.trainer import device_of, intra_op_threads, make_trainer
from transferlab.tracking import build_logger, finish_wandb, wandb_info, wandb_summary

log = logging.getLogger("transferlab")

#: the run's exact training examples (indices into the training split, file paths), beside result.json
TRAIN_INDICES_FILE = "train_indices.json"
#: the config hash the checkpoints in ``checkpoints/`` belong to
STATE_FILE = "run_state.json"

# Frozen blocks are in eval mode on purpose (their BatchNorm statistics must not move).
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


def build_run(cfg: DictConfig) -> Run:
    """Cheap checks, then the weights (the source task trained if needed), then the run's parts."""
    plan = plan_run(cfg)
    return assemble(cfg, plan, resolve_weights(cfg, plan.policy))


def tunable_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The values of the hyperparameters a tuning grid may vary, by dotted key: the optimizer's LR and
    weight decay and every strategy option. The report selects among a cell's runs by these."""
    strategy = {f"strategy.{k}": v for k, v in plain(cfg.strategy).items() if k not in ("name", "_target_")}
    optimizer = plain(cfg.optimizer)
    return {"optimizer.lr": optimizer.get("lr"), "optimizer.weight_decay": optimizer.get("weight_decay"), **strategy}


def start_record(cfg: DictConfig, cfg_hash: str | None, inputs: dict[str, Any] | None, out_dir: Path) -> RunRecord:
    """The ``running`` record of a config: what the run is, before anything ran."""
    per_class = cfg.dataset.get("per_class")
    return RunRecord(
        status=Status.RUNNING,
        experiment=cfg.experiment_name,
        sweep=cfg.get("sweep_name"),
        dataset=cfg.dataset.name,
        backbone=cfg.backbone.name,
        weights=cfg.backbone.get("weights"),  # None once the policy says it is not pretrained (scratch)
        strategy=cfg.strategy.name,
        head=cfg.head.name,
        fraction=None if per_class is not None else cfg.dataset.get("fraction"),
        per_class=per_class,
        seed=int(cfg.seed),
        config_hash=cfg_hash,
        hparams=tunable_hparams(cfg),
        data_fingerprint=inputs,
        transferlab_version=__version__,
        host=socket.gethostname(),
        output_dir=str(out_dir),
    )


def train(cfg: DictConfig, out_dir: Path | None = None) -> dict[str, float]:
    """Run one config end to end; write ``result.json``; return the final metrics.

    Paths in the config are taken against the folder the command was launched from. A completed run of the
    same config and data in ``out_dir`` is not run again; one whose data changed runs again, its files set
    aside first (``run.inputs``); an interrupted one resumes from its last checkpoint. A failure writes a
    ``failed`` record with the error, a signal or Ctrl-C an ``interrupted`` one (``run.preemption``), then
    it re-raises.
    """
    check_config(cfg)  # typed (config.schema): a bad value fails here, before any file is written
    out_dir = Path(out_dir) if out_dir is not None else output_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = with_absolute_paths(cfg, launch_dir())
    # one process per run folder: a second one (two sweep workers given the same trial, a job still running
    # when its stale trial is retried) waits, then finds the run completed. DDP ranks > 0 share rank 0's run.
    with file_lock(out_dir / RUN_LOCK) if rank() == 0 else contextlib.nullcontext():
        return _run_unless_completed(cfg, out_dir)


def _run_unless_completed(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    """Under the folder's lock: the completed run's metrics when its identity matches, else a new record and the run."""
    try:
        inputs = inputs_fingerprint(cfg)  # before the completed check: the data is part of the identity
    except TransferlabError as err:  # no data (or a bad layout): recorded as failed, never over a completed run
        previous = read_record(out_dir)
        if rank() == 0 and (previous is None or not previous.completed):
            _record_end(out_dir, start_record(cfg, None, None, out_dir), err)
        raise
    cfg_hash = config_hash(cfg, inputs["digest"])
    done = is_completed(out_dir, cfg_hash)
    if done is not None:
        log.info("already completed (config %s): %s", cfg_hash, out_dir / RESULT_FILE)
        report_recorded(cfg.get("optuna_trial"), done)
        return dict(done.metrics or {})
    previous = read_record(out_dir)
    stopped = _reached_rung(previous, cfg_hash, cfg.get("rung_fraction"))
    if stopped or already_pruned(previous, cfg_hash, cfg.get("optuna_trial")):
        log.info("already stopped at this rung or pruned (config %s): %s", cfg_hash, out_dir / RESULT_FILE)
        report_recorded(None if stopped else cfg.get("optuna_trial"), previous)  # type: ignore[arg-type]
        return dict(previous.metrics or {})  # type: ignore[union-attr] - _reached_rung checked it
    record = start_record(cfg, cfg_hash, inputs, out_dir)
    if previous is not None and previous.config_hash == cfg_hash and not previous.completed:
        record.train_time_s = previous.train_time_s  # what it trained before a rung stopped it: the time adds up
    if rank() == 0:
        record.replaces = _set_aside_if_stale(cfg, cfg_hash, out_dir, inputs)
        write_record(out_dir, record)  # running: the report counts it pending until it ends
    try:
        return _assemble_and_run(cfg, out_dir, record)
    except BaseException as err:
        if rank() == 0:
            _record_end(out_dir, record, err)
        if isinstance(err, RunInterrupted):
            err.hand_over()  # the launcher's requeue (submitit's handler), now that last.ckpt and the record are written
        raise


def _reached_rung(previous: RunRecord | None, cfg_hash: str, fraction: float | None) -> bool:
    """Whether the folder's run of this config already stopped at this rung (``rung_fraction``) or a later one."""
    if fraction is None or previous is None or previous.config_hash != cfg_hash or previous.rung is None:
        return False
    return previous.status in (Status.PAUSED, Status.PRUNED) and float(previous.rung["fraction"]) >= float(fraction) - EPS


def _set_aside_if_stale(cfg: DictConfig, cfg_hash: str, out_dir: Path, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """When ``out_dir`` holds a completed run of this config whose data changed: move its files aside and
    say what changed (for the new record's ``replaces``). A completed run of another config is an error."""
    previous = read_record(out_dir)
    if previous is None or not previous.completed:
        return None
    old = previous.data_fingerprint
    if previous.config_hash != config_hash(cfg, (old or {}).get("digest")):
        raise ConfigError(
            f"{out_dir} holds a completed run of another config (hash {previous.config_hash}, this one {cfg_hash}). It is not "
            "overwritten. Fix: choose another hydra.run.dir (or hydra.sweep.dir), or move that folder away."
        )
    changed = what_changed(old, inputs)
    kept = set_aside(out_dir, previous.config_hash)
    log.warning("%s: the data changed since this run completed (%s). It runs again; the completed run's files "
                "are kept in %s.", out_dir, "; ".join(changed), kept)
    return {"config_hash": previous.config_hash, "kept_in": str(kept), "changes": changed}


def _record_end(out_dir: Path, record: RunRecord, err: BaseException) -> None:
    """Write the record of a run that did not complete: ``interrupted`` (it resumes) or ``failed``."""
    if is_interruption(err):
        record.status, record.error = Status.INTERRUPTED, describe_interruption(err)
    else:
        record.status, record.error = Status.FAILED, f"{type(err).__name__}: {err}"
        record.traceback = traceback.format_exc(limit=8)
    write_record(out_dir, record)


def _assemble_and_run(cfg: DictConfig, out_dir: Path, record: RunRecord) -> dict[str, float]:
    """Assemble the run (data, model, policy) and its logger, then fit and test it."""
    ckpt_dir = out_dir / "checkpoints"
    if ckpt_dir.exists() and (read_json(out_dir / STATE_FILE) or {}).get("config_hash") != record.config_hash:
        shutil.rmtree(ckpt_dir)  # checkpoints of another config: never resume from them
    if rank() == 0:
        write_json_atomic(out_dir / STATE_FILE, {"config_hash": record.config_hash})
    run = build_run(cfg)
    record.n_train, record.feature_cache_hit = run.n_train, run.feature_cache_hit
    if not run.policy.pretrained:
        record.weights = None
    record.source_seed = source_seed(cfg) if record.weights == "source" else None
    if run.selection is not None:  # the draw the report pairs strategies by
        record.subset_seed, record.draw = run.selection["subset_seed"], run.selection["draw"]
    if rank() == 0 and run.selection is not None:
        write_json_atomic(out_dir / TRAIN_INDICES_FILE, redact(run.selection))
    logger = _logger(cfg, out_dir, record) if rank() == 0 else None
    record.wandb = wandb_info(logger)
    try:
        return _fit_and_test(cfg, out_dir, record, run, logger)
    except BaseException as err:
        # never left active: the next job of a multirun gets its own W&B run (a resumed one continues this id)
        finish_wandb(logger, exit_code=1, preempted=is_interruption(err))
        raise


def _logger(cfg: DictConfig, out_dir: Path, record: RunRecord) -> Any:
    """The run's Lightning logger, its W&B run grouped by its sweep's folder, named and tagged by what tells
    it apart from the sweep's other runs (``run.dashboard``)."""
    items = distinguishing(job_overrides(), launch_dir(), record.hparams)
    group = wandb_group(cfg, out_dir, launch_dir())
    with redacted_argv():  # W&B records the command line
        return build_logger(cfg.logger, out_dir, resolved(cfg), run_name(record, items), group, str(record.strategy),
                            run_tags(record, items))


def _resume_point(run: Run, last: Path, record: RunRecord) -> str | None:
    """``last.ckpt`` when there is one that fits the model (checked, safely loaded), else None."""
    if not last.is_file():
        return None
    ckpt = check_checkpoint_fits(run.module, last)  # safe load; another backbone or class count fails here
    log.info("resuming from %s (epoch %s done)", last, ckpt.get("epoch"))
    record.resumed_from_epoch = ckpt.get("epoch")
    return str(last)


def _fit_and_test(cfg: DictConfig, out_dir: Path, record: RunRecord, run: Run, logger: Any) -> dict[str, float]:
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    best = BestWeights(cfg.monitor, cfg.monitor_mode)
    keep = bool(cfg.get("keep_checkpoints", False))
    finish_s = float(cfg.get("signal_finish_epoch_s") or 0)
    last_ckpt = LastCheckpoint(ckpt_dir, every_s=float(cfg.get("checkpoint_every_s") or 0), save_final=keep,
                               keep_latest_after_s=finish_s if in_slurm_job() else None)
    ddp, stop = DistributedSync(), SignalStop(last_ckpt, finish_epoch_s=finish_s)
    rung = RungStop(cfg.get("rung_fraction"), best, last_ckpt)
    pruning = TrialPruning(cfg.get("optuna_trial"), best, is_rank_zero=rank() == 0)
    callbacks = [run.policy, best, last_ckpt, rung, pruning, ddp, stop, *curve_callbacks(logger)]
    trainer = make_trainer(cfg, out_dir, callbacks, logger, n_train=run.n_train,
                           checkpoints=False, reload_dataloaders=run.staged, solved_epochs=run.solved_epochs)
    record.resumed_from = _resume_point(run, ckpt_dir / LAST, record)
    start = time.perf_counter()
    with intra_op_threads(1 if run.policy.features_only else None):
        try:
            fitted = _solve_and_fit(cfg, record, run, trainer)
            train_time = time.perf_counter() - start + run.feature_time_s
            if rung.stopped_at is not None or pruning.pruned_at is not None:
                return _pause(record, run, trainer, best, rung, pruning, train_time, logger, out_dir)
            best.restore(run.module)  # test the weights of the best validation epoch
            best_score = best.best_score if fitted else _validate(trainer, run, cfg.monitor, ddp)
            tested = trainer.test(run.module, datamodule=run.datamodule, verbose=False)
        finally:
            stop.close()
    metrics = {k: float(v) for k, v in tested[0].items()}
    if best_score is not None:
        metrics[f"{cfg.monitor}_best"] = best_score
    if keep and trainer.is_global_zero:
        torch.save(run.module.export_state_dict(), ckpt_dir / BEST)  # adapters merged in: a plain timm backbone
    _complete(record, run, trainer, ddp, metrics, train_time, out_dir)
    record.val_curve = best.curve
    if trainer.is_global_zero:
        extra = {**summary_entries(record), **wandb_entries(record.probe)}
        record.wandb = wandb_summary(logger, metrics, out_dir / RESULT_FILE, extra=extra)
        write_record(out_dir, record)
        if not keep:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    return metrics


def _pause(record: RunRecord, run: Run, trainer: Any, best: BestWeights, rung: RungStop, pruning: TrialPruning,
           train_time: float, logger: Any, out_dir: Path) -> dict[str, float]:
    """Record a run a rung stopped (``paused``, its checkpoints kept: a promotion resumes it) or Optuna's
    pruner stopped (``pruned``, its checkpoints deleted); return its score there as ``<monitor>_best``,
    what the sweeper and the app's return value read."""
    score = best.best_score
    metrics = {} if score is None else {f"{best.monitor}_best": float(score)}
    record.metrics, planned = metrics, int(trainer.max_epochs)
    if pruning.pruned_at is not None:
        pruning.mark(record, score, planned)
    else:
        record.status = Status.PAUSED
        record.rung = rung_entry(float(rung.fraction or 0), int(rung.stopped_at or 0), score)
    record.train_time_s = round((record.train_time_s or 0.0) + train_time, 3)
    record.epochs, record.steps = int(pruning.pruned_at or rung.stopped_at or 0), int(trainer.global_step)
    record.planned_epochs, record.val_curve = planned, best.curve
    record.trainable_params, record.total_params = run.policy.parameter_counts(run.module)
    if trainer.is_global_zero:
        paused = record.status == Status.PAUSED  # a promoted run continues the same W&B id; a pruned one is done
        finish_wandb(logger, exit_code=0, preempted=paused)
        write_record(out_dir, record)
        if not paused:
            shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return metrics


def _solve_and_fit(cfg: DictConfig, record: RunRecord, run: Run, trainer: Any) -> bool:
    """Solve the head on the cached features (``strategy.solver=lbfgs``), then fit what is left to train;
    whether the Trainer fitted (a solved linear probe has nothing left)."""
    if run.solves_head:
        record.probe = solve_head(run.module, run.features, run.train_indices, run.policy, device_of(cfg)).summary()
        if run.policy.features_only:
            run.policy.settle_solved(run.module)
            return False
    trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=record.resumed_from, weights_only=True)
    return True


def _validate(trainer: Any, run: Run, monitor: str, ddp: DistributedSync) -> float | None:
    """The monitored score of the head as it is (solved, nothing trained): one validation pass; under DDP
    the ranks' solved heads are checked to be identical."""
    validated = trainer.validate(run.module, datamodule=run.datamodule, verbose=False)
    ddp.check(trainer, run.module)
    value = validated[0].get(monitor) if validated else None
    return None if value is None else float(value)


def _complete(record: RunRecord, run: Run, trainer: Any, ddp: DistributedSync, metrics: dict[str, float],
              train_time: float, out_dir: Path) -> None:
    """Fill in what the finished run measured: metrics, parameter counts, time, epochs, cached epochs."""
    epochs = int(trainer.current_epoch)
    cached_epochs = 0
    if run.staged:
        cached_epochs = min(run.datamodule.feature_epochs, epochs) if trainer.world_size == 1 else 0  # images under DDP
    elif run.features_cached and run.policy.features_only:
        cached_epochs = epochs
    if trainer.world_size > 1:
        record.world_size, record.ranks_in_sync, record.ddp_mask_mode = trainer.world_size, ddp.in_sync, run.policy.mask_mode
    record.trainable_params, record.total_params = run.policy.parameter_counts(run.module)
    counts = run.policy.counts_at_start
    record.status, record.metrics = Status.COMPLETED, metrics
    record.trainable_params_start = counts[0] if counts else None
    record.train_time_s = round((record.train_time_s or 0.0) + train_time, 3)  # with the rungs before it
    record.feature_time_s = round(run.feature_time_s, 3)
    record.epochs, record.steps, record.cached_feature_epochs = epochs, int(trainer.global_step), cached_epochs
    record.planned_epochs = int(trainer.max_epochs or epochs)
    record.features_cached = cached_epochs > 0 or run.solves_head
    record.weights_path, record.output_dir = run.weights, str(out_dir)
