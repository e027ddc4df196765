"""Speed settings: per-accelerator defaults, channels_last inputs, gradient checkpointing, the benchmark script."""

from __future__ import annotations

import json
import importlib.util
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import transferlab.run.lifecycle
from transferlab.errors import ConfigError
from transferlab.config.schema import BackboneConfig
from transferlab.model.module import RunChoices, TransferModule
from conftest import read_result
from transferlab.run.lifecycle import train
from transferlab.run.trainer import autocast_dtype
from transferlab.config.location import config_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs with one intra-op thread (conftest's ``one_thread``)."""


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_accelerator_files_set_trainer_and_backbone_speed_defaults() -> None:
    cpu, gpu = cfg(), cfg("trainer=gpu")
    assert cpu.trainer.accelerator == "cpu" and gpu.trainer.accelerator == "gpu"
    assert gpu.trainer.precision == "bf16-mixed" and gpu.backbone.channels_last is True
    for c in (cpu, gpu):
        assert c.backbone.compile is False and c.backbone.grad_checkpointing is False
        assert set(c.trainer) >= {"max_epochs", "precision", "devices"} and "backbone" not in c.trainer
    over = cfg("trainer=gpu", "backbone.channels_last=false", "trainer.max_epochs=3")
    assert over.backbone.channels_last is False and over.trainer.max_epochs == 3


def test_autocast_dtype_follows_lightning_precision() -> None:
    assert autocast_dtype("bf16-mixed") is torch.bfloat16 and autocast_dtype("16-mixed") is torch.float16
    assert autocast_dtype("32-true") is None and autocast_dtype(32) is None


def test_channels_last_reaches_weights_and_inputs() -> None:
    module = TransferModule(BackboneConfig(name="test_resnet", channels_last=True), RunChoices(num_classes=3))
    seen = []
    module.backbone.register_forward_pre_hook(lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    module(torch.randn(2, 3, 32, 32))
    assert seen == [True]
    convs = [p for p in module.backbone.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


def test_grad_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    for ckpt in (False, True):
        torch.manual_seed(0)
        module = TransferModule(BackboneConfig(name="test_resnet", grad_checkpointing=ckpt), RunChoices(num_classes=3))
        assert module.backbone.grad_checkpointing is ckpt
        module.criterion(module(x), y).backward()
        grads.append({n: p.grad for n, p in module.named_parameters()})
    assert all(g is not None for g in grads[1].values())  # the stem too, although the input needs no grad
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)


def test_grad_checkpointing_unsupported_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm.models.resnet

    def unsupported(self, enable=True):  # noqa: ANN001
        raise AssertionError("gradient checkpointing not supported")

    monkeypatch.setattr(timm.models.resnet.ResNet, "set_grad_checkpointing", unsupported)
    with pytest.raises(ConfigError, match="grad_checkpointing"):
        TransferModule(BackboneConfig(name="test_resnet", grad_checkpointing=True), RunChoices(num_classes=3))


def test_benchmark_runs_small_on_cpu(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "benchmarks" / "benchmark.py")
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    out = tmp_path / "bench.json"
    result = benchmark.main(["--device", "cpu", "--model", "test_resnet", "--img-size", "32", "--batch-size", "8",
                             "--steps", "2", "--epochs", "2", "--skip-lp", "--precision-rounds", "2", "--out", str(out)])
    saved = json.loads(out.read_text())
    tp = saved["throughput"]
    assert tp["framework_img_s"] > 0 and tp["hand_loop_img_s"] > 0 and tp["ratio"] > 0
    assert tp["step_gflops"] > 0 and [len(e) for e in tp["seconds"]["hand_loop"]] == [2, 2]
    assert saved["machine"]["cpu_count"] and saved["machine"]["torch"] == torch.__version__
    assert len(saved["precision_layout"]["configs"]) == 4
    assert "skipped" in saved["study"] and result["throughput"] == tp


def test_benchmark_table_reads_every_committed_result_and_judges_the_lbfgs_probe() -> None:
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "benchmarks" / "benchmark.py")
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    for path in sorted((REPO / "benchmarks" / "results").glob("*.json")):  # older files: the SGD-probe layout
        assert benchmark.table(json.loads(path.read_text())).startswith("| benchmark"), path
    run = {"wall_s": 0.4, "test_acc": 0.95, "train_time_s": 0.15, "solver_time_s": 0.1, "fits": 16}
    lp = {"epochs": 20, "img_size": 16, "weights": "source", "cached_warm": [run], "cached_warm_wall_s": 0.4,
          "cached_warm_train_s": 0.15, "solver_time_s": 0.1, "extraction_s": 0.5, "solver_vs_extraction": 0.2,
          "uncached": {"wall_s": 11.0, "train_time_s": 10.5, "test_acc": 0.88}, "cached_cold": {"wall_s": 1.5},
          "cached_sgd": {"train_time_s": 1.2, "test_acc": 0.88}, "train_speedup": 70.0, "speedup_warm": 27.5,
          "speedup_cold": 7.3, "acc_cached": 0.95, "acc_uncached": 0.88, "acc_lost_points": -7.0}
    text = benchmark.table({"linear_probe_by_size": [lp, {**lp, "train_speedup": 40.0, "acc_lost_points": 0.5}]})
    rows = [line for line in text.splitlines() if "L-BFGS, 16 fits" in line or "test accuracy" in line]
    assert [r.rstrip(" |").split()[-1] for r in rows] == ["yes", "yes", "NO", "NO"]


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("every_s, resumed_at", [(0, 2), (3600, 0)])
def test_last_checkpoint_is_written_as_configured_and_resumed_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every_s: int, resumed_at: int
) -> None:
    """checkpoint_every_s=0: last.ckpt after every epoch, so a run killed in epoch 2 resumes there;
    a long interval: none was written yet, so it starts over."""
    import pytorch_lightning as pl

    starts: list[int] = []

    class Watch(pl.Callback):
        def __init__(self, kill_at: int | None) -> None:
            self.kill_at = kill_at

        def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            starts.append(trainer.current_epoch)
            if trainer.current_epoch == self.kill_at:
                raise Interrupt

    real_make_trainer = transferlab.run.lifecycle.make_trainer

    def with_watch(kill_at):  # noqa: ANN001, ANN202
        return lambda cfg, out_dir, callbacks, *a, **k: real_make_trainer(cfg, out_dir, [*callbacks, Watch(kill_at)], *a, **k)

    run_cfg = cfg("strategy=scratch", "backbone.name=test_resnet", "backbone.weights=null", "dataset.fraction=0.1",
                  "logger=none", "trainer.max_epochs=3", "trainer.enable_progress_bar=false", f"checkpoint_every_s={every_s}",
                  f"paths.cache_dir={tmp_path / 'cache'}")
    monkeypatch.setattr(transferlab.run.lifecycle, "make_trainer", with_watch(2))
    with pytest.raises(Interrupt):
        train(run_cfg, out_dir=tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file() is (every_s == 0)
    starts.clear()
    monkeypatch.setattr(transferlab.run.lifecycle, "make_trainer", with_watch(None))
    train(run_cfg, out_dir=tmp_path / "run")
    assert starts[0] == resumed_at and starts[-1] == 2
    record = read_result(tmp_path / "run")
    assert record["status"] == "completed" and record["epochs"] == 3
