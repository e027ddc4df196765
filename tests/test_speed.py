"""Speed settings: per-accelerator defaults, channels_last inputs, gradient checkpointing, the benchmark script."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from transferlab.errors import ConfigError
from transferlab.model import TransferModule
from transferlab.train import autocast_dtype, config_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
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
    module = TransferModule("test_resnet", num_classes=3, channels_last=True)
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
        module = TransferModule("test_resnet", num_classes=3, grad_checkpointing=ckpt)
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
        TransferModule("test_resnet", num_classes=3, grad_checkpointing=True)


def test_benchmark_runs_small_on_cpu(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import benchmark
    finally:
        sys.path.pop(0)
    out = tmp_path / "bench.json"
    result = benchmark.main(["--device", "cpu", "--model", "test_resnet", "--img-size", "32", "--batch-size", "8",
                             "--steps", "2", "--epochs", "2", "--skip-lp", "--out", str(out)])
    saved = json.loads(out.read_text())
    tp = saved["throughput"]
    assert tp["framework_img_s"] > 0 and tp["hand_loop_img_s"] > 0 and tp["ratio"] > 0
    assert tp["step_gflops"] > 0 and len(tp["epoch_s"]["hand_loop"]) == 2
    assert saved["machine"]["cpu_count"] and saved["machine"]["torch"] == torch.__version__
    assert "skipped" in saved["study"] and result["throughput"] == tp
