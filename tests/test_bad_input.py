"""Bad configurations and files: each gets a clear error (what is wrong, how to fix it), and the run
leaves no partial or misleading record (no result.json, or a valid one with status "failed").

Folder/manifest dataset files are covered by the dataset tests.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from conftest import make_cfg
from transferlab.errors import ConfigError, DataError, TrainingDiverged, TransferlabError, WeightsError
from transferlab.config.schema import BackboneConfig
from transferlab.model.module import RunChoices, TransferModule
from transferlab.files import write_json_atomic
from transferlab.identity import config_hash
from transferlab.run.lifecycle import train

BASE = ["backbone.name=test_resnet", "backbone.weights=null"]


def assert_no_misleading_record(out: Path) -> dict | None:
    """No result.json, or a complete JSON file saying the run failed (never "completed")."""
    path = out / "result.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())  # a partial file would not parse
    assert record["status"] == "failed", record
    assert record["error"]
    return record


# ---- config values ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "error", "pattern"),
    [
        (["backbone.name=resnet1"], ConfigError, r"not a timm model\. Did you mean: .*resnet18"),
        (["backbone.name=vit_smal_patch16_224"], ConfigError, r"Did you mean: vit_small_patch16_224"),
        (["dataset.fraction=0"], ConfigError, r"dataset.fraction=0.* must be in \(0, 1\]"),
        (["dataset.fraction=1.5"], ConfigError, r"dataset.fraction=1.5 must be in \(0, 1\]"),
        (["dataset.fraction=0.001"], DataError, r"leaves class '0' .* with no example. Fix: use dataset.fraction ≥"),
        (["dataset.per_class=1000"], DataError, r"per_class=1000 but class .* has only \d+ training examples. Fix"),
        (["dataset.num_classes=7"], DataError, r"num_classes=7 but the data has 10 classes.*Fix: set dataset.num_classes=10"),
        (["dataset.batch_size=0"], ConfigError, r"dataset.batch_size=0 must be ≥ 1"),
        (["strategy=finetune", "strategy.unfreeze_top_k=6"], ConfigError, r"unfreeze_top_k=6, but this backbone has 5 blocks.*0\.\.5"),
        (["strategy=nonsense"], Exception, r"nonsense"),
        (["strategy=finetune", "+strategy.unfreeze_top_kk=2"], ConfigError, r"unfreeze_top_kk.*Remove or rename the unknown strategy"),
        (["head.dropout=1.5"], ConfigError, r"head.dropout=1.5 must be in \[0, 1\)"),
        (["head.activation=swishy"], ConfigError, r"head.activation='swishy' is unknown; choose one of"),
        (["optimizer.lr=-0.1"], ConfigError, r"optimizer.lr=-0.1 must be a positive number"),
        (["optimizer.name=adamz"], ConfigError, r"optimizer.name='adamz' is unknown; choose one of \['adam', 'adamw', 'sgd'\]"),
        (["trainer.max_epochz=3"], Exception, r"max_epochz"),
        (["+trainer.max_epochz=3"], ConfigError, r"trainer: .*max_epochz.*Use Lightning Trainer argument names"),
        (["backbone.weights=/no/such/file.safetensors"], WeightsError, r"file not found.*\.safetensors or \.pth"),
    ],
)
def test_bad_config_gets_a_clear_error(tmp_path: Path, overrides: list[str], error: type, pattern: str) -> None:
    try:
        cfg = make_cfg(tmp_path, *BASE, *overrides)
    except Exception as err:  # Hydra itself rejects some overrides (unknown group option or key)
        assert error is Exception, f"compose failed unexpectedly: {err}"
        assert re.search(pattern, str(err)), str(err)
        return
    with pytest.raises(error, match=pattern):
        train(cfg, tmp_path / "run")
    assert_no_misleading_record(tmp_path / "run")


# ---- weights files ---------------------------------------------------------------------------------
class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _resnet_state() -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in timm.create_model("test_resnet", num_classes=0).state_dict().items()}


def _other_architecture(path: Path, marker: Path) -> None:
    torch.save(timm.create_model("test_efficientnet", num_classes=0).state_dict(), path)


def _random_bytes(path: Path, marker: Path) -> None:
    path.write_bytes(random.Random(path.name).randbytes(4096))  # fixed bytes: the same error path every run


def _pickle_with_code(path: Path, marker: Path) -> None:
    torch.save({**_resnet_state(), "extra": _RunsCode(marker)}, path)


def _nan_values(path: Path, marker: Path) -> None:
    state = _resnet_state()
    state["conv1.0.weight"][0, 0] = float("nan")
    save_file(state, str(path))


@pytest.mark.parametrize(
    ("name", "make", "error", "pattern"),
    [
        ("effnet.pth", _other_architecture, WeightsError, r"does not fit backbone ResNet: \d+ missing keys .*Fix: use weights saved from the same backbone"),
        ("corrupt.safetensors", _random_bytes, WeightsError, r"cannot read weights from .*corrupt.safetensors: it is damaged or not a weights file.*Fix: give a \.safetensors file"),
        ("corrupt.pth", _random_bytes, WeightsError, r"cannot read weights from .*corrupt.pth: it is damaged or not a (file of tensors|weights file).*Fix: give"),
        ("code.pth", _pickle_with_code, WeightsError, r"cannot read weights from .*code.pth: it holds pickled Python objects.*never loaded.*Unsupported global: GLOBAL (builtins|io)\.open\)"),
        ("nan.safetensors", _nan_values, WeightsError, r"NaN or infinite values in 1 tensors \['conv1.0.weight'\].*Fix"),
    ],
)
def test_bad_weights_file_gets_a_clear_error(tmp_path: Path, name: str, make: Callable, error: type, pattern: str) -> None:
    path, marker = tmp_path / name, tmp_path / "pickled-code-ran"
    make(path, marker)
    cfg = make_cfg(tmp_path, "backbone.name=test_resnet", f"backbone.weights={path}", "strategy=finetune")
    with pytest.raises(error, match=pattern):
        train(cfg, tmp_path / "run")
    assert not marker.exists(), "loading the weights file executed pickled code"
    assert_no_misleading_record(tmp_path / "run")


# ---- resume checkpoints in the run folder --------------------------------------------------------
def _module(backbone: str = "test_resnet", num_classes: int = 10) -> TransferModule:
    return TransferModule(BackboneConfig(name=backbone), RunChoices(num_classes=num_classes, input_size=32))


def _ckpt_of(module: TransferModule) -> dict:
    return {"epoch": 0, "global_step": 3, "state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}


def _ckpt_other_backbone(path: Path, marker: Path) -> None:
    torch.save(_ckpt_of(_module("test_vit")), path)


def _ckpt_other_class_count(path: Path, marker: Path) -> None:
    torch.save(_ckpt_of(_module(num_classes=5)), path)


def _ckpt_with_code(path: Path, marker: Path) -> None:
    torch.save({**_ckpt_of(_module()), "loops": _RunsCode(marker)}, path)


def _ckpt_truncated(path: Path, marker: Path) -> None:
    torch.save(_ckpt_of(_module()), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (_ckpt_other_backbone, r"last.ckpt \(written for backbone 'test_vit', 10 classes\) does not fit this run's model: \d+ missing keys \['backbone.conv1"),
        (_ckpt_other_class_count, r"\(written for backbone 'test_resnet', 5 classes\) does not fit this run's model: 2 shape mismatches \['head.0.weight: checkpoint \(5, 96\) vs model \(10, 96\)'"),
        (_ckpt_with_code, r"cannot load checkpoint .*last.ckpt safely: it holds pickled Python objects, which are never loaded as they could run code \(.*Unsupported global: GLOBAL (builtins|io)\.open\)"),
        (_ckpt_truncated, r"cannot load checkpoint .*last.ckpt safely: it is damaged.*Fix: delete .*last.ckpt \(the run then starts over\)"),
    ],
)
def test_bad_resume_checkpoint_gets_a_clear_error(tmp_path: Path, make: Callable, pattern: str) -> None:
    """A ``last.ckpt`` in the run folder of this very config (run_state.json matches) that must not be resumed."""
    cfg = make_cfg(tmp_path, *BASE, "strategy=scratch", "dataset.fraction=0.1")
    out, marker = tmp_path / "run", tmp_path / "pickled-code-ran"
    (out / "checkpoints").mkdir(parents=True)
    write_json_atomic(out / "run_state.json", {"config_hash": config_hash(cfg)})
    make(out / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(WeightsError, match=pattern):
        train(cfg, out)
    assert not marker.exists(), "loading the checkpoint executed pickled code"
    assert_no_misleading_record(out)


# ---- training that diverges -------------------------------------------------------------------------
def test_nan_loss_stops_the_run_with_a_failed_record(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, *BASE, "strategy=scratch", "optimizer=sgd", "optimizer.lr=1e6", "dataset.fraction=0.2",
                   "dataset.batch_size=16")
    with pytest.raises(TrainingDiverged, match=r"training loss is (nan|inf|-inf) at epoch 0, step \d+\. Fix: lower optimizer.lr"):
        train(cfg, tmp_path / "run")
    record = assert_no_misleading_record(tmp_path / "run")
    assert record is not None and record["error"].startswith("TrainingDiverged: training loss is")
    assert isinstance(record, dict) and "metrics" not in record
    assert issubclass(TrainingDiverged, TransferlabError)  # the CLI prints it without a traceback, exit code 2
