"""End-to-end runs through train(cfg) and the transferlab-train CLI; clear errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from conftest import ROOT, make_cfg
from transferlab.data.splits import draw_id
from transferlab.errors import ConfigError, WeightsError
from transferlab.run.lifecycle import train


def _result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def test_linear_probe_on_source_weights_trains_only_the_head(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "strategy=linear_probe", "backbone.name=test_resnet", "backbone.weights=source", "trainer.max_epochs=3")
    out = tmp_path / "run"
    metrics = train(cfg, out)
    record = _result(out)
    assert record["status"] == "completed"
    head_params = 96 * 10 + 10  # test_resnet has 96 features; digits has 10 classes
    assert record["trainable_params"] == head_params
    assert record["total_params"] > 100 * head_params
    assert record["weights"] == "source" and Path(record["weights_path"]).is_file()
    assert record["features_cached"] is True
    for key in ("test/acc", "test/f1_macro", "val/acc_best"):
        assert 0.0 <= record["metrics"][key] <= 1.0
    assert record["metrics"]["test/acc"] == metrics["test/acc"]
    assert record["n_train"] == 1259  # digits: 1,797 images, 70 % train at the default split
    # the record names its draw (the indices of train_indices.json) and the source model's seed
    chosen = json.loads((out / "train_indices.json").read_text())
    assert record["draw"] == chosen["draw"] == draw_id(np.array(chosen["indices"])) and len(chosen["indices"]) == 1259
    assert (record["subset_seed"], chosen["subset_seed"], record["source_seed"]) == (0, 0, 0)
    # the source checkpoint is cached: a second experiment run reuses the same file
    cfg2 = make_cfg(tmp_path, "strategy=finetune", "backbone.name=test_resnet", "backbone.weights=source", "dataset.fraction=0.05")
    train(cfg2, tmp_path / "run2")
    assert _result(tmp_path / "run2")["weights_path"] == record["weights_path"]
    assert len(list((tmp_path / "cache" / "source").glob("*.safetensors"))) == 1


def test_completed_run_is_skipped_and_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = make_cfg(tmp_path, "backbone.name=test_resnet", "backbone.weights=null", "dataset.fraction=0.1")
    train(cfg, out)
    first = (out / "result.json").read_text()
    assert _result(out)["source_seed"] is None and _result(out)["subset_seed"] == 0  # no source model; seed 0's draw
    train(cfg, out)  # same config: skipped
    assert (out / "result.json").read_text() == first
    other = make_cfg(tmp_path, "backbone.name=test_resnet", "backbone.weights=null", "dataset.fraction=0.2")
    with pytest.raises(ConfigError, match="completed run of another config"):
        train(other, out)
    assert (out / "result.json").read_text() == first


def test_failed_run_writes_a_failed_record(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = make_cfg(tmp_path, "backbone.name=test_resnet", "backbone.weights=null", "strategy=finetune", "strategy.unfreeze_top_k=99")
    with pytest.raises(ConfigError, match=r"unfreeze_top_k=99, but this backbone has 5 blocks.*0\.\.5"):
        train(cfg, out)
    record = _result(out)
    assert record["status"] == "failed" and "unfreeze_top_k" in record["error"]


def test_weights_file_that_does_not_fit_lists_the_keys(tmp_path: Path) -> None:
    other = timm.create_model("test_vit", num_classes=0)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    cfg = make_cfg(tmp_path, "backbone.name=test_resnet", f"backbone.weights={path}")
    with pytest.raises(WeightsError, match=r"does not fit backbone ResNet: \d+ missing keys \['conv1"):
        train(cfg, tmp_path / "run")


def test_weights_file_with_classifier_is_loaded_into_the_headless_backbone(tmp_path: Path) -> None:
    source = timm.create_model("test_resnet", num_classes=1000)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    cfg = make_cfg(tmp_path, "backbone.name=test_resnet", f"backbone.weights={path}", "strategy=linear_probe")
    from transferlab.run.lifecycle import build_run

    module = build_run(cfg).module
    assert torch.equal(module.backbone.conv1[0].weight, source.conv1[0].weight)
    assert module.head[-1].out_features == 10


def test_hub_weights_offline_fail_fast_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = make_cfg(tmp_path, "backbone.name=resnet18", "backbone.weights=hub")
    with pytest.raises(WeightsError, match=r"weights=hub.*backbone.weights=null.*source"):
        train(cfg, tmp_path / "run")


def test_cli_runs_and_writes_result_in_the_hydra_folder(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TRANSFERLAB_RUNS": str(tmp_path / "runs"),
           "TRANSFERLAB_CACHE": str(tmp_path / "cache")}
    args = ["backbone.name=test_resnet", "backbone.weights=null", "strategy=scratch", "trainer.max_epochs=1",
            "dataset.fraction=0.1", "logger=csv", "trainer.enable_progress_bar=false"]
    proc = subprocess.run([sys.executable, "-m", "transferlab.train", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "transferlab: done: test/acc=" in proc.stdout
    results = list((tmp_path / "runs" / "default" / "single").glob("*/result.json"))
    assert len(results) == 1 and json.loads(results[0].read_text())["strategy"] == "scratch"
    assert f"transferlab: result: {results[0].resolve()}\n" in proc.stdout, "the run says where its record is"
    assert (results[0].parent / "csv" / "metrics.csv").is_file()
    bad = subprocess.run([sys.executable, "-m", "transferlab.train", "backbone.name=resnet1", "logger=none"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "transferlab: error: backbone.name='resnet1' is not a timm model" in bad.stderr
    assert "Traceback" not in bad.stderr
