#!/usr/bin/env python
"""What the framework costs, measured in one process.

1. Fine-tuning throughput (images/s) of a real transferlab run -- ``build_run`` (TransferModule, the
   finetune freeze policy) and ``make_trainer`` (the Lightning Trainer from the run config, CSV logger,
   checkpointing) -- against a minimal hand-written PyTorch loop on the same timm model, data, batch
   size and optimizer. The two alternate, from a Lightning hook, so both see the same machine load:
   step by step on CPU (a framework step is everything from the end of the previous hand step to
   the end of its own on_train_batch_end: data, hooks, logging, metrics, optimizer, scheduler), epoch
   by epoch on GPU (where a sync per step would serialize the framework's launch overhead with the
   GPU's work). The first epoch of each is warm-up; medians of the rest are reported, and the median
   of the paired ratios. Validation is off. "incl. epoch end" adds what Lightning does between
   epochs (epoch metrics, the resume checkpoint when checkpoint_every_s has passed).
   Also FLOPs of one training step (fwd+bwd, torch.utils.flop_counter) and the TFLOP/s achieved.
   On CPU, first: the hand loop under 32-true / bf16-mixed x contiguous / channels_last (the evidence
   for the defaults in conf/trainer/cpu.yaml).
2. Linear probe through real ``train()`` runs: L-BFGS on cached features, its whole L2 search (cold:
   extraction included; warm: cache hit), against 20 epochs of SGD with ``strategy.cache_features=false``
   (backbone every epoch), and 20 SGD epochs on the cache (the probe before L-BFGS). The solver's time is
   also given as a multiple of one backbone pass over the data (the cold run's extraction).
3. ``--study``: wall time of the default study (``transferlab-train -m experiment=digits_transfer
   sweep=strategy_x_fraction``) in a subprocess, with fresh run and cache folders.

4. ``--fingerprint-files N``: seconds to fingerprint a generated folder (and a manifest) of N small files, the
   step each run takes before its completed check; ``--multirun-overhead N``: what a run costs besides its
   training inside a multirun of N tiny jobs (Hydra, the callbacks, the fingerprint and the start record).
   ``--only-identity`` runs just these two.

Writes ``benchmarks/results/<machine>.json`` and prints a table.

    python benchmarks/benchmark.py                       # CPU: resnet18, 32 px (a few minutes)
    python benchmarks/benchmark.py --device cuda         # GPU: resnet50, 224 px, bf16, channels_last,
                                                         #      synthetic data already on the device
    python benchmarks/benchmark.py --device cpu --model resnet18 --img-size 64 --steps 5 --skip-lp
    python benchmarks/benchmark.py --only-identity --fingerprint-files 100000 --multirun-overhead 20 --machine cpu-2core-identity
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from transferlab.data.registry import data_fingerprint  # noqa: E402
from transferlab.identity import resolved  # noqa: E402
from transferlab.record import read_record, write_record  # noqa: E402
from transferlab.run.checkpoints import BestWeights, LastCheckpoint  # noqa: E402
from transferlab.run.context import cache_dir  # noqa: E402
from transferlab.run.lifecycle import build_run, train  # noqa: E402
from transferlab.run.source import source_weights, source_weights_path  # noqa: E402
from transferlab.run.trainer import autocast_dtype, make_trainer  # noqa: E402
from transferlab.tracking import build_logger  # noqa: E402

CONF = REPO / "conf"
#: lp_speedup: SGD-probe train time through the backbone / L-BFGS-probe train time on the cache (its whole L2
#: search); lp_solver_vs_extraction: that search's time / one backbone pass over the data; lp_acc_points: the
#: test accuracy the L-BFGS probe may lose against the SGD one, in points
#: fingerprint_100k_s: seconds to fingerprint 100,000 files ("a few seconds"); run_overhead_s: what a run of a
#: multirun costs besides its training (the data fingerprint and the start record included)
TARGETS = {"throughput_ratio": 0.95, "lp_speedup": 50.0, "lp_solver_vs_extraction": 1.0, "lp_acc_points": 0.0, "study_s": 360.0,
           "fingerprint_100k_s": 3.0, "run_overhead_s": 1.0}


# ---- machine -------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    import timm

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "lightning": pl.__version__,
        "load_avg_start": list(os.getloadavg()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return f"cpu-{os.cpu_count()}core"


# ---- helpers -------------------------------------------------------------------------------------
def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_for(precision: str, device: torch.device):
    dtype = autocast_dtype(precision)
    if dtype is None or precision.endswith("-true"):
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class BatchPool(torch.utils.data.Dataset):
    """``steps`` ready batches cycled from a small pool (already on the device): loading costs nothing."""

    def __init__(self, pool: list[tuple[torch.Tensor, torch.Tensor]], steps: int) -> None:
        self.pool, self.steps = pool, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pool[i % len(self.pool)]


def make_loader(args: argparse.Namespace, device: torch.device, num_classes: int, seed: int) -> torch.utils.data.DataLoader:
    """The same kind of loader for both loops: in-memory tensors, shuffled batches (or a device pool)."""
    g = torch.Generator().manual_seed(seed)
    shape = (3, args.img_size, args.img_size)
    if args.synthetic_on_device:
        pool = [
            (torch.randn(args.batch_size, *shape, generator=g).to(device), torch.randint(0, num_classes, (args.batch_size,), generator=g).to(device))
            for _ in range(min(args.steps, 8))
        ]
        return torch.utils.data.DataLoader(BatchPool(pool, args.steps), batch_size=None)
    n = args.steps * args.batch_size
    data = torch.utils.data.TensorDataset(torch.randn(n, *shape, generator=g), torch.randint(0, num_classes, (n,), generator=g))
    return torch.utils.data.DataLoader(
        data, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed)
    )


# ---- 1. throughput -------------------------------------------------------------------------------
class HandLoop:
    """The reference: a minimal PyTorch training loop on the same timm model."""

    def __init__(self, args: argparse.Namespace, device: torch.device, num_classes: int, lr: float, weight_decay: float) -> None:
        import timm

        torch.manual_seed(0)
        self.model = timm.create_model(args.model, num_classes=num_classes).to(device)
        if args.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if args.compile:
            self.model.compile()
        # the framework's optimizer: AdamW with fused kernels (TransferModule.configure_optimizers' rule)
        fused = not args.precision.startswith("16")
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
        self.args, self.device = args, device
        self.scaler = torch.amp.GradScaler(device.type) if args.precision.startswith("16-mixed") else None
        self.loader = make_loader(args, device, num_classes, seed=1)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(self.args.precision, self.device):
            loss = F.cross_entropy(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        return loss

    def epoch(self) -> float:
        """Seconds for one epoch."""
        self.model.train()
        with torch.enable_grad():
            sync(self.device)
            start = time.perf_counter()
            for x, y in self.loader:
                self.step(x, y)
            sync(self.device)
        return time.perf_counter() - start

    def step_flops(self) -> int:
        """FLOPs of one training step (forward + backward), counted by torch's FlopCounterMode."""
        from torch.utils.flop_counter import FlopCounterMode

        x, y = next(iter(self.loader))
        x, y = x.to(self.device), y.to(self.device)
        if self.args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        counter = FlopCounterMode(display=False)
        with counter, autocast_for(self.args.precision, self.device):
            loss = F.cross_entropy(self.model(x), y)
        with counter:
            loss.backward()
        self.opt.zero_grad(set_to_none=True)
        return int(counter.get_total_flops())


class Interleave(pl.Callback):
    """Times the framework and runs the hand loop in between: one hand step after each framework
    step (``per_step``: CPU, where nothing is asynchronous), or one hand epoch after each framework
    epoch (GPU, where a sync per step would hide the framework's launch overhead)."""

    def __init__(self, hand: HandLoop, device: torch.device, n_steps: int, per_step: bool) -> None:
        self.hand, self.device, self.n_steps, self.per_step = hand, device, n_steps, per_step
        self.fw: list[list[float]] = []  # seconds per step (step mode) or per epoch's steps (epoch mode)
        self.ref: list[list[float]] = []
        self.epoch_end_s: list[float] = []  # between the last step of an epoch and the next epoch's start
        self.mark = 0.0
        self.hand_batches: Any = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sync(self.device)
        now = time.perf_counter()
        if self.fw:
            self.epoch_end_s.append(now - self.mark)
        self.fw.append([])
        self.ref.append([])
        self.mark = now
        self.hand_batches = iter(self.hand.loader)
        self.hand.model.train()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if self.per_step or batch_idx == self.n_steps - 1:
            sync(self.device)
            end = time.perf_counter()
            self.fw[-1].append(end - self.mark)
            with torch.enable_grad():
                if self.per_step:
                    self.hand.step(*next(self.hand_batches))
                    sync(self.device)
                    self.ref[-1].append(time.perf_counter() - end)
                else:
                    self.ref[-1].append(self.hand.epoch())
            self.mark = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sync(self.device)
        self.epoch_end_s.append(time.perf_counter() - self.mark)


def throughput_config(args: argparse.Namespace, device: torch.device, work: Path):  # noqa: ANN201
    """The fine-tune run the throughput benchmark times: the run's own config, validation off."""
    return compose([
        "strategy=finetune",
        f"trainer={'gpu' if device.type == 'cuda' else 'cpu'}",
        f"backbone.name={args.model}",
        "backbone.weights=null",
        f"backbone.channels_last={args.channels_last}",
        f"backbone.compile={args.compile}",
        f"dataset.input_size={args.img_size}",
        f"dataset.batch_size={args.batch_size}",
        f"trainer.precision={args.precision}",
        f"trainer.max_epochs={args.epochs}",
        "+trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        f"paths.runs_dir={work / 'runs'}",
        f"paths.cache_dir={work / 'cache'}",
    ])


def throughput(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    """Fine-tune images/s of a real run (module, policy, Trainer, callbacks) against a hand loop, interleaved."""
    cfg = throughput_config(args, device, work)
    run = build_run(cfg)  # the module and freeze policy exactly as a run builds them
    num_classes = int(cfg.dataset.num_classes)
    hand = HandLoop(args, device, num_classes, float(cfg.optimizer.lr), float(cfg.optimizer.weight_decay))
    loader = make_loader(args, device, num_classes, seed=1)
    timer = Interleave(hand, device, len(loader), per_step=args.interleave == "step")
    out_dir = work / "throughput"
    # the run's checkpoint callbacks: best weights (in memory, after validation: off here) and last.ckpt
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    checkpoint = LastCheckpoint(out_dir / "checkpoints", every_s=float(cfg.checkpoint_every_s))
    best = BestWeights(cfg.monitor, cfg.monitor_mode)
    logger = build_logger(cfg.logger, out_dir, resolved(cfg), "benchmark", "benchmark", "finetune", [])
    trainer = make_trainer(cfg, out_dir, [run.policy, best, checkpoint, timer], logger,
                           n_train=len(loader) * args.batch_size, checkpoints=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*could not find the monitored key.*")
        trainer.fit(run.module, train_dataloaders=loader)
    return {**throughput_summary(args, timer, hand.step_flops()), "checkpoint_every_s": float(cfg.checkpoint_every_s)}


def throughput_summary(args: argparse.Namespace, timer: Interleave, flops: int) -> dict[str, Any]:
    """Images/s of both loops (median step, fastest quarter, whole epochs) and TFLOP/s, from ``timer``'s times."""
    n_steps, per_step = timer.n_steps, timer.per_step
    measured = slice(1, None) if args.epochs > 1 else slice(None)  # epoch 0 of each loop is warm-up
    fw = [t for e in timer.fw[measured] for t in e]
    ref = [t for e in timer.ref[measured] for t in e]
    images = args.batch_size if per_step else n_steps * args.batch_size  # per timed unit
    fw_img_s, ref_img_s = images / statistics.median(fw), images / statistics.median(ref)
    # other processes only ever add time: the fastest quarter of each shows the machine's capacity
    fw_q, ref_q = images / quantile(fw, 0.25), images / quantile(ref, 0.25)
    epoch_end = statistics.median(timer.epoch_end_s[measured]) if timer.epoch_end_s[measured] else 0.0
    fw_full = n_steps * args.batch_size / statistics.median(sum(e) + epoch_end for e in timer.fw[measured])
    ref_epoch_img_s = n_steps * args.batch_size / statistics.median(sum(e) for e in timer.ref[measured])
    per_image = flops / args.batch_size
    return {
        "model": args.model, "img_size": args.img_size, "batch_size": args.batch_size, "steps_per_epoch": n_steps,
        "epochs": args.epochs, "warmup_epochs": 1 if args.epochs > 1 else 0, "interleave": args.interleave,
        "precision": args.precision, "channels_last": args.channels_last, "compile": args.compile,
        "synthetic_on_device": args.synthetic_on_device, "torch_threads": torch.get_num_threads(),
        "framework_img_s": round(fw_img_s, 1),
        "hand_loop_img_s": round(ref_img_s, 1),
        "ratio": round(fw_img_s / ref_img_s, 3),
        "ratio_paired": round(statistics.median(h / f for f, h in zip(fw, ref)), 3),  # median of adjacent pairs' hand / framework
        "framework_img_s_fastest_quarter": round(fw_q, 1),
        "hand_loop_img_s_fastest_quarter": round(ref_q, 1),
        "ratio_fastest_quarter": round(fw_q / ref_q, 3),
        "epoch_end_s": round(epoch_end, 3),  # epoch-end hooks and checkpoint writes, median
        "framework_incl_epoch_end_img_s": round(fw_full, 1),
        "hand_loop_epoch_img_s": round(ref_epoch_img_s, 1),  # whole epochs, median
        "ratio_incl_epoch_end": round(fw_full / ref_epoch_img_s, 3),
        "step_gflops": round(flops / 1e9, 2),
        "framework_tflop_s": round(per_image * fw_img_s / 1e12, 3),
        "hand_loop_tflop_s": round(per_image * ref_img_s / 1e12, 3),
        "seconds": {
            "framework": [[round(t, 4) for t in e] for e in timer.fw],
            "hand_loop": [[round(t, 4) for t in e] for e in timer.ref],
            "epoch_end": [round(t, 3) for t in timer.epoch_end_s],
        },
    }


# ---- 0. CPU precision and memory layout ----------------------------------------------------------
def precision_layout(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Hand-loop training speed of 32-true / bf16-mixed x contiguous / channels_last, in short bursts
    in a shuffled order each round, so all four see the same load; speed relative to 32-true
    contiguous within each round, median over rounds (the evidence for conf/trainer/cpu.yaml)."""
    import random

    configs = [(p, cl) for p in ("32-true", "bf16-mixed") for cl in (False, True)]
    loops = {}
    for precision, cl in configs:
        a = argparse.Namespace(**{**vars(args), "precision": precision, "channels_last": cl, "compile": False,
                                  "synthetic_on_device": True, "steps": 1})
        loop = HandLoop(a, device, 10, 1e-3, 0.01)
        batch = next(iter(loop.loader))
        for _ in range(2):
            loop.step(*batch)
        loops[(precision, cl)] = (loop, batch)
    rng = random.Random(0)
    rel: dict[tuple[str, bool], list[float]] = {c: [] for c in configs}
    img_s: dict[tuple[str, bool], list[float]] = {c: [] for c in configs}
    for _ in range(args.precision_rounds):
        seconds = {}
        for c in rng.sample(configs, len(configs)):
            loop, batch = loops[c]
            sync(device)
            start = time.perf_counter()
            for _ in range(2):
                loop.step(*batch)
            sync(device)
            seconds[c] = time.perf_counter() - start
        for c in configs:
            rel[c].append(seconds[("32-true", False)] / seconds[c])
            img_s[c].append(2 * args.batch_size / seconds[c])
    return {
        "model": args.model, "img_size": args.img_size, "batch_size": args.batch_size, "rounds": args.precision_rounds,
        "configs": [
            {"precision": p, "channels_last": cl, "speed_vs_32_contiguous": round(statistics.median(rel[(p, cl)]), 3),
             "img_s_median": round(statistics.median(img_s[(p, cl)]), 1)}
            for p, cl in configs
        ],
    }


# ---- 2. linear probe: cached vs recomputed ---------------------------------------------------------
def linear_probe(args: argparse.Namespace, device: torch.device, work: Path, img_size: int = 0) -> dict[str, Any]:
    base = ["experiment=digits_transfer", "strategy=linear_probe", f"trainer={'gpu' if device.type == 'cuda' else 'cpu'}",
            f"trainer.max_epochs={args.lp_epochs}",
            "trainer.enable_progress_bar=false", "logger=csv", "seed=0"]
    if args.cache_dir:
        base.append(f"paths.cache_dir={args.cache_dir}")
    if img_size:  # the target's input only: the source checkpoint stays the experiment's
        base.append(f"dataset.input_size={img_size}")
    weights, source_s = "null", None
    if args.lp_weights in ("auto", "source"):
        cfg = compose(base)
        path = source_weights_path(cfg, cache_dir(cfg))
        if path.is_file():
            weights = str(path)
        elif args.lp_weights == "source":
            start = time.perf_counter()
            weights = str(source_weights(cfg, cache_dir(cfg)))
            source_s = round(time.perf_counter() - start, 1)
    # a fresh feature cache, so the first cached run is a miss; the weights file is named by path
    common = base + [f"backbone.weights={weights}", f"paths.cache_dir={work / f'lp-cache{img_size or 0}'}"]

    def one(name: str, *overrides: str) -> dict[str, Any]:
        cfg = compose(common + list(overrides))
        out = work / f"lp{img_size or ''}" / name
        start = time.perf_counter()
        metrics = train(cfg, out_dir=out)
        wall = time.perf_counter() - start
        record = read_record(out)
        probe = (record.probe if record else None) or {}
        row = {"wall_s": round(wall, 2), "test_acc": round(metrics["test/acc"], 4),
               "train_time_s": record.train_time_s if record else None,
               "feature_time_s": record.feature_time_s if record else None,
               "feature_cache_hit": record.feature_cache_hit if record else None,
               "solver": probe.get("solver", "sgd"), "solver_time_s": probe.get("solver_time_s"),
               "l2": probe.get("l2"), "fits": len(probe.get("curve") or []) or None}
        print(f"  linear probe {name}: {row}", flush=True)
        return row

    lbfgs, sgd = "strategy.solver=lbfgs", "strategy.solver=sgd"
    runs = {"cached_cold": one("cached_cold", lbfgs)}  # the cache miss: one backbone pass over every split
    warm = [one("cached_warm_0", lbfgs)]
    runs["uncached"] = one("uncached", "strategy.cache_features=false", sgd)
    runs["cached_sgd"] = one("cached_sgd", sgd)
    warm += [one(f"cached_warm_{i}", lbfgs) for i in range(1, args.lp_repeats)]
    warm_s = statistics.median(r["wall_s"] for r in warm)
    warm_train = statistics.median(r["train_time_s"] for r in warm)
    solver_s = statistics.median(r["solver_time_s"] for r in warm)
    extraction_s = runs["cached_cold"]["feature_time_s"]
    cached_acc, uncached_acc = warm[0]["test_acc"], runs["uncached"]["test_acc"]
    return {
        "epochs": args.lp_epochs,
        "img_size": int(compose(base).dataset.input_size),
        "weights": "source" if weights != "null" else "null",
        "weights_path": None if weights == "null" else weights,
        "source_training_s": source_s,
        **runs,
        "cached_warm": warm,
        "cached_warm_wall_s": warm_s,
        "cached_warm_train_s": warm_train,
        "solver_time_s": solver_s,
        "extraction_s": extraction_s,
        "solver_vs_extraction": round(solver_s / extraction_s, 3),
        "train_speedup": round(runs["uncached"]["train_time_s"] / warm_train, 1),
        "speedup_warm": round(runs["uncached"]["wall_s"] / warm_s, 1),
        "speedup_cold": round(runs["uncached"]["wall_s"] / runs["cached_cold"]["wall_s"], 1),
        "acc_cached": cached_acc,
        "acc_uncached": uncached_acc,
        "acc_diff_points": round(100 * abs(cached_acc - uncached_acc), 2),
        "acc_lost_points": round(100 * (uncached_acc - cached_acc), 2),
    }


# ---- 3. the default study -------------------------------------------------------------------------
def study(work: Path, in_repo: bool = False, sweep: str = "fair_x_fraction") -> dict[str, Any]:
    """Wall time of ``make study`` (the fair protocol, its report included) from nothing: into fresh run,
    cache and report folders under ``work``, or (``in_repo``) into the repository's own ``runs/``,
    ``.cache/transferlab`` and ``experiments/``, which must not hold the study yet (the committed report is
    then the one timed)."""
    env = dict(os.environ)
    cmd = ["make", "study", f"BIN={Path(sys.executable).parent}", f"STUDY_SWEEP={sweep}"]
    if in_repo:
        stale = [p for p in (REPO / "runs" / "digits_transfer" / "fair_x_fraction", REPO / ".cache" / "transferlab") if p.exists()]
        if stale:
            raise SystemExit(f"benchmark --study-in-repo times the study from nothing, and {', '.join(map(str, stale))} "
                             "exist. Fix: make clean (it removes runs/ and .cache/transferlab), or use --study.")
        runs = REPO / "runs"
    else:
        env.update(TRANSFERLAB_RUNS=str(work / "study-runs"), TRANSFERLAB_CACHE=str(work / "study-cache"))
        cmd.append(f"STUDY_OUT={work / 'study-reports'}")
        runs = work / "study-runs"
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    records = [r for p in (runs / "digits_transfer").rglob("result.json") if (r := read_record(p.parent)) is not None]
    return {
        "command": f"make study STUDY_SWEEP={sweep} (fresh runs, cache and report folders; .venv installed)",
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "runs": len(records),
        "train_time_s_sum": round(sum(r.train_time_s or 0 for r in records), 1),
        "steps_sum": sum(r.steps or 0 for r in records),
        "statuses": {s: sum(r.status.value == s for r in records) for s in sorted({r.status.value for r in records})},
        "stderr_tail": proc.stderr[-2000:] if proc.returncode else "",
    }


# ---- 4. a run's identity: the data fingerprint, and the per-run overhead inside a multirun ----------------
def fingerprint_files(n_files: int, work: Path, repeats: int = 3) -> dict[str, Any]:
    """Seconds to fingerprint a folder of ``n_files`` small files (100 class folders) and a manifest listing
    them: the step every run takes before its completed check. The files were just written, so their
    metadata is in the page cache (as for a folder a sweep's jobs fingerprint one after another)."""
    root = work / "fingerprint" / "imgs"
    per_class = max(1, n_files // 100)
    rows = []
    for i in range(n_files):
        path = root / f"c{i // per_class:03d}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG" + i.to_bytes(4, "little") * 16)
        rows.append(f"{path},c{i // per_class:03d}")
    manifest = work / "fingerprint" / "labels.csv"
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    out: dict[str, Any] = {"files": n_files, "classes": len({r.split(",")[1] for r in rows}), "repeats": repeats}
    for kind, cfg in (("folder", {"kind": "folder", "root": str(root)}), ("manifest", {"kind": "manifest", "path": str(manifest)})):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fp = data_fingerprint(cfg)
            times.append(time.perf_counter() - start)
        assert sum(c["files"] for c in fp["classes"].values()) == n_files
        out[f"{kind}_s"] = round(statistics.median(times), 3)
        out[f"{kind}_s_all"] = [round(t, 3) for t in times]
    return out


def _multirun(work: Path, jobs: int, tag: str) -> dict[str, Any]:
    """``transferlab-train -m`` of ``jobs`` tiny jobs (seeds) in a subprocess: its wall time and each job's own time."""
    seeds = ",".join(str(s) for s in range(jobs))
    cmd = [sys.executable, "-m", "transferlab.train", "-m", "backbone.name=test_resnet", "backbone.weights=null",
           "strategy=scratch", "dataset.per_class=2", "trainer.max_epochs=1", "logger=none",
           "trainer.enable_progress_bar=false", f"seed={seeds}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFERLAB_RUNS": str(work / "overhead-runs"),
           "TRANSFERLAB_CACHE": str(work / "overhead-cache")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmark: the multirun ({tag}) failed: {proc.stderr[-2000:]}")
    job_s = [float(m) for m in re.findall(r"job \d+ of \d+ done \(([\d.]+) s\)", proc.stdout)]
    return {"jobs": jobs, "wall_s": round(wall, 2), "job_s_sum": round(sum(job_s), 2),
            "skipped": proc.stdout.count("already completed") + proc.stderr.count("already completed")}


def multirun_overhead(n_jobs: int, work: Path, repeats: int = 20) -> dict[str, Any]:
    """What a run costs besides its training, inside a multirun of ``n_jobs`` tiny jobs (digits, 2 images per
    class, test_resnet, 1 epoch): Hydra's composition and folder naming, the callbacks, and transferlab's
    identity step (absolute paths, the data fingerprint, the hash, the completed check and the start record).

    - ``per_job_outside_s``: a multirun's wall time less its start-up (a 1-job multirun of a completed job)
      and less the jobs' own time (``job k of N done (… s)``), per job;
    - ``skip_per_job_s``: the marginal cost of one completed job in a multirun ((wall of N skips - wall of 1
      skip) / (N - 1)): everything a job costs before it would train;
    - ``identity_step_s``: in this process, ``train()`` on a completed run (the real skip path) and the write
      of a start record, medians of ``repeats``.
    """
    ran = _multirun(work, n_jobs, "run")
    skipped = _multirun(work, n_jobs, "skip")
    startup = _multirun(work, 1, "startup")
    cfg = compose(["backbone.name=test_resnet", "backbone.weights=null", "strategy=scratch", "dataset.per_class=2",
                   "trainer.max_epochs=1", "logger=none", "trainer.enable_progress_bar=false",
                   f"paths.cache_dir={work / 'overhead-cache'}"])
    out = work / "identity-step"
    train(cfg, out)
    skip, record = [], read_record(out)
    for _ in range(repeats):
        start = time.perf_counter()
        train(cfg, out)
        skip.append(time.perf_counter() - start)
    write = []
    for _ in range(repeats):
        start = time.perf_counter()
        write_record(out / "start", record)
        write.append(time.perf_counter() - start)
    return {
        "run": ran, "skip": skipped, "startup": startup,
        "per_job_outside_s": round((ran["wall_s"] - startup["wall_s"] - ran["job_s_sum"]) / n_jobs, 3),
        "skip_per_job_s": round((skipped["wall_s"] - startup["wall_s"]) / max(1, n_jobs - 1), 3),
        "job_s_mean": round(ran["job_s_sum"] / n_jobs, 3),
        "identity_step_s": {"completed_skip_in_process": round(statistics.median(skip), 4),
                            "start_record_write": round(statistics.median(write), 4)},
    }


# ---- report --------------------------------------------------------------------------------------
def _lp_rows(lp: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """The linear-probe rows: L-BFGS on cached features (its whole L2 search) against SGD through the backbone."""
    if "train_speedup" not in lp:  # a results file from before the L-BFGS probe
        return [(f"linear probe {lp['epochs']} ep wall s ({lp.get('img_size')}px)", f"{lp['cached_warm_wall_s']:.2f} cached",
                 f"{lp['uncached']['wall_s']:.2f} recomputed", f"{lp['speedup_warm']:.1f}x", "")]
    ok = "yes" if lp["train_speedup"] >= TARGETS["lp_speedup"] else "NO"
    fits = lp["cached_warm"][0].get("fits")
    rows = [(f"linear probe train s ({lp.get('img_size')}px, weights={lp['weights']}): L-BFGS, {fits} fits, vs SGD {lp['epochs']} ep",
             f"{lp['cached_warm_train_s']:.3f} cached", f"{lp['uncached']['train_time_s']:.2f} recomputed",
             f"{lp['train_speedup']:.0f}x", f">= {TARGETS['lp_speedup']:.0f}x {ok}")]
    ok = "yes" if lp["solver_vs_extraction"] <= TARGETS["lp_solver_vs_extraction"] else "NO"
    rows.append(("  solver (the whole L2 search) vs one backbone pass (extraction)", f"{lp['solver_time_s']:.3f}",
                 f"{lp['extraction_s']:.3f} extraction", f"{lp['solver_vs_extraction']:.2f}x", f"<= {TARGETS['lp_solver_vs_extraction']:.0f}x {ok}"))
    rows.append(("  wall s (Trainer, validation and test included)", f"{lp['cached_warm_wall_s']:.2f} cached",
                 f"{lp['uncached']['wall_s']:.2f} recomputed", f"{lp['speedup_warm']:.1f}x", ""))
    rows.append(("  first run (cache miss: extraction incl.)", f"{lp['cached_cold']['wall_s']:.2f} cached",
                 f"{lp['uncached']['wall_s']:.2f} recomputed", f"{lp['speedup_cold']:.1f}x", ""))
    ok = "yes" if lp["acc_lost_points"] <= TARGETS["lp_acc_points"] else "NO"
    rows.append(("  test accuracy", f"{lp['acc_cached']:.4f} L-BFGS", f"{lp['acc_uncached']:.4f} SGD",
                 f"{-lp['acc_lost_points']:+.2f} pt", f"lost <= {TARGETS['lp_acc_points']:.0f} pt {ok}"))
    sgd = lp["cached_sgd"]
    rows.append((f"  SGD {lp['epochs']} ep on cached features (the probe before L-BFGS)", f"{sgd['train_time_s']:.2f} s",
                 f"acc {sgd['test_acc']:.4f}", "", ""))
    return rows


def table(result: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str]] = []
    pl_ = result.get("precision_layout")
    if pl_:
        for c in pl_["configs"]:
            rows.append((f"hand loop {pl_['model']} {pl_['img_size']}px: {c['precision']}{' channels_last' if c['channels_last'] else ''}",
                         f"{c['img_s_median']:.1f} img/s", "32-true contiguous", f"{c['speed_vs_32_contiguous']:.2f}x", ""))
    tp = result.get("throughput")
    if tp:
        cond = f"{tp['model']} {tp['img_size']}px bs{tp['batch_size']} {tp['precision']}{' channels_last' if tp['channels_last'] else ''}"
        ok = "yes" if tp["ratio"] >= TARGETS["throughput_ratio"] else "NO"
        rows.append((f"fine-tune img/s ({cond})", f"{tp['framework_img_s']:.1f}", f"{tp['hand_loop_img_s']:.1f} hand loop",
                     f"{tp['ratio']:.3f} (paired {tp['ratio_paired']:.3f})", f">= {TARGETS['throughput_ratio']} {ok}"))
        rows.append(("  fastest quarter of the steps (least disturbed)", f"{tp['framework_img_s_fastest_quarter']:.1f}",
                     f"{tp['hand_loop_img_s_fastest_quarter']:.1f} hand loop", f"{tp['ratio_fastest_quarter']:.3f}", ""))
        rows.append((f"  whole epochs incl. epoch end ({tp['epoch_end_s']:.2f} s; last.ckpt every {tp['checkpoint_every_s']:.0f} s)", f"{tp['framework_incl_epoch_end_img_s']:.1f}",
                     f"{tp['hand_loop_epoch_img_s']:.1f} hand loop", f"{tp['ratio_incl_epoch_end']:.3f}", ""))
        rows.append((f"  TFLOP/s ({tp['step_gflops']:.1f} GFLOP/step fwd+bwd)", f"{tp['framework_tflop_s']:.3f}",
                     f"{tp['hand_loop_tflop_s']:.3f} hand loop", "", ""))
    for lp in result.get("linear_probe_by_size") or ([result["linear_probe"]] if result.get("linear_probe") else []):
        rows += _lp_rows(lp)
    st = result.get("study")
    if st is not None:
        if "skipped" in st:
            rows.append(("default study wall s", "skipped", st["skipped"], "", ""))
        else:
            ok = "yes" if st["returncode"] == 0 and st["wall_s"] <= TARGETS["study_s"] else "NO"
            rows.append((f"default study wall s ({st['runs']} runs, rc {st['returncode']})", f"{st['wall_s']:.1f}", "", "",
                         f"<= {TARGETS['study_s']:.0f} {ok}"))
    fp = result.get("fingerprint")
    if fp:
        goal = TARGETS["fingerprint_100k_s"] * fp["files"] / 100_000
        for kind in ("folder", "manifest"):
            ok = "yes" if fp[f"{kind}_s"] <= goal else "NO"
            rows.append((f"fingerprint a {kind} of {fp['files']:,} files ({fp['classes']} classes) s", f"{fp[f'{kind}_s']:.2f}",
                         "", "", f"<= {goal:.1f} {ok}"))
    oh = result.get("multirun_overhead")
    if oh:
        for label, value in (("per run, outside the jobs", oh["per_job_outside_s"]), ("per completed run (skipped)", oh["skip_per_job_s"]),
                             ("identity step in train() (skip path)", oh["identity_step_s"]["completed_skip_in_process"]),
                             ("start record write", oh["identity_step_s"]["start_record_write"])):
            ok = "yes" if value <= TARGETS["run_overhead_s"] else "NO"
            rows.append((f"multirun of {oh['run']['jobs']} tiny jobs: {label} s", f"{value:.3f}", f"{oh['job_s_mean']:.2f} per job",
                         "", f"<= {TARGETS['run_overhead_s']:.0f} {ok}"))
    header = ("benchmark", "transferlab", "reference", "ratio", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *map(line, rows)])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--model", help="timm model (cpu: resnet18, cuda: resnet50)")
    p.add_argument("--img-size", type=int, help="input side in pixels (cpu: 32, cuda: 224)")
    p.add_argument("--batch-size", type=int, help="(cpu: 64, cuda: 256)")
    p.add_argument("--steps", type=int, help="training steps per epoch (cpu: 20, cuda: 50)")
    p.add_argument("--epochs", type=int, default=6, help="epochs of each loop; the first is warm-up (default 6)")
    p.add_argument("--precision", choices=("32-true", "bf16-mixed", "16-mixed"),
                   help="Lightning precision for both loops (default: conf/trainer/<cpu|gpu>.yaml)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC for both loops (default: conf/trainer/<cpu|gpu>.yaml)")
    p.add_argument("--interleave", choices=("step", "epoch"),
                   help="alternate the two loops every step (default on cpu) or every epoch (default on cuda)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice, as a run)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile both models")
    p.add_argument("--synthetic-on-device", action=argparse.BooleanOptionalAction, default=None,
                   help="batches pre-made on the device, so loading is not measured (default: on for cuda)")
    p.add_argument("--lp-epochs", type=int, default=20)
    p.add_argument("--lp-img-sizes", type=int, nargs="+", default=[0, 64],
                   help="input sides of the linear-probe runs; 0 = the experiment's own (default: 0 64). The source "
                        "checkpoint stays the experiment's; a bigger input makes the backbone, what the cache saves, "
                        "cost more")
    p.add_argument("--lp-repeats", type=int, default=3, help="cached (warm) linear-probe runs; the median counts")
    p.add_argument("--lp-weights", choices=("auto", "source", "null"), default="auto",
                   help="auto: the source checkpoint when cached, else random init; source: train it if missing")
    p.add_argument("--cache-dir", help="where the source checkpoint is looked for (default: paths.cache_dir)")
    p.add_argument("--precision-rounds", type=int, default=30, help="rounds of the CPU precision/layout comparison")
    p.add_argument("--skip-precision", action="store_true", help="skip the CPU precision/layout comparison")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-lp", action="store_true")
    p.add_argument("--study", action="store_true", help="also time the default study (minutes)")
    p.add_argument("--study-sweep", default="fair_x_fraction",
                   help="with --study: the sweep (fair_x_fraction_halving: selected by successive halving)")
    p.add_argument("--study-in-repo", action="store_true",
                   help="with --study: into the repository's runs/, cache and experiments/ (the committed report)")
    p.add_argument("--fingerprint-files", type=int, default=0, metavar="N",
                   help="time the data fingerprint of a generated folder (and manifest) of N small files, e.g. 100000")
    p.add_argument("--multirun-overhead", type=int, default=0, metavar="N",
                   help="time what a run costs besides training inside a multirun of N tiny jobs, e.g. 20")
    p.add_argument("--only-identity", action="store_true",
                   help="run only --fingerprint-files and --multirun-overhead (skip the throughput, LP and precision parts)")
    p.add_argument("--machine", help="results file name (default: cpu-<N>core or the GPU's name)")
    p.add_argument("--out", help="results JSON path (default: benchmarks/results/<machine>.json)")
    p.add_argument("--keep", action="store_true", help="keep the temporary run folders")
    args = p.parse_args(argv)
    gpu = args.device == "cuda"
    args.model = args.model or ("resnet50" if gpu else "resnet18")
    args.img_size = args.img_size or (224 if gpu else 32)
    args.batch_size = args.batch_size or (256 if gpu else 64)
    args.steps = args.steps or (50 if gpu else 20)
    trainer_cfg = compose([f"trainer={'gpu' if gpu else 'cpu'}"])
    args.precision = args.precision or str(trainer_cfg.trainer.precision)
    args.channels_last = bool(trainer_cfg.backbone.channels_last) if args.channels_last is None else args.channels_last
    args.synthetic_on_device = gpu if args.synthetic_on_device is None else args.synthetic_on_device
    args.interleave = args.interleave or ("epoch" if gpu else "step")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmark: --device cuda but no GPU is visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/benchmark.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "machine": machine_info(device),
        "targets": TARGETS,
    }
    work = Path(tempfile.mkdtemp(prefix="transferlab-bench-"))
    if args.only_identity:
        args.skip_precision = args.skip_throughput = args.skip_lp = True
    try:
        if args.fingerprint_files:
            print(f"data fingerprint of {args.fingerprint_files:,} files …", flush=True)
            result["fingerprint"] = fingerprint_files(args.fingerprint_files, work)
        if args.multirun_overhead:
            print(f"per-run overhead in a multirun of {args.multirun_overhead} tiny jobs …", flush=True)
            result["multirun_overhead"] = multirun_overhead(args.multirun_overhead, work)
        if device.type == "cpu" and not args.skip_precision:
            print("precision and layout: hand loop, 32-true / bf16-mixed x contiguous / channels_last …", flush=True)
            result["precision_layout"] = precision_layout(args, device)
        if not args.skip_throughput:
            print("throughput: framework vs hand-written loop …", flush=True)
            result["throughput"] = throughput(args, device, work)
        if not args.skip_lp:
            by_size = []
            for size in args.lp_img_sizes:
                label = f"{size} px" if size else "the experiment's input size"
                print(f"linear probe: cached vs recomputed features, {args.lp_epochs} epochs, {label} …", flush=True)
                by_size.append(linear_probe(args, device, work, size))
            result["linear_probe"] = by_size[0]  # the first size (the experiment's by default)
            result["linear_probe_by_size"] = by_size
        if args.study:
            print("default study …", flush=True)
            result["study"] = study(work, in_repo=args.study_in_repo, sweep=args.study_sweep)
        else:
            result["study"] = {"skipped": "not asked (--study)"}
    finally:
        if args.keep:
            print(f"run folders kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["machine"]["load_avg_end"] = list(os.getloadavg())
    result["duration_s"] = round(time.perf_counter() - started, 1)
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"{args.machine or machine_name(device)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(result))
    print(f"\n{result['machine']['cpu']} ({result['machine']['cpu_count']} cores)"
          + (f", {result['machine']['gpu']}" if "gpu" in result["machine"] else "")
          + f", torch {result['machine']['torch']}; load average {result['machine']['load_avg_start'][0]:.1f} -> "
          f"{result['machine']['load_avg_end'][0]:.1f}; {result['duration_s']:.0f} s; written to {out}")
    return result


if __name__ == "__main__":
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)  # a table, not Lightning's banners
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    main()
