"""The L-BFGS probe inside a run: the default for a cached linear probe, its head validated, tested, saved and
recorded like any run's, chosen without the test split; clear errors before anything slow; lp_ft fine-tunes
from the solved head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import transferlab.model.module
import transferlab.run.lifecycle as lifecycle
from conftest import read_result
from transferlab.errors import ConfigError, DataError
from transferlab.run.lifecycle import build_run, train
from transferlab.config.location import config_dir

pytestmark = pytest.mark.filterwarnings("ignore")
HEAD_PARAMS = 96 * 10 + 10  # test_resnet: 96 features; digits: 10 classes


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """One intra-op thread (conftest's ``one_thread``)."""


def make_cfg(tmp_path: Path, *overrides: str):
    base = [
        "strategy=linear_probe", "backbone.name=test_resnet", "backbone.weights=null", "dataset.input_size=32",
        "dataset.fraction=0.2", "logger=none", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
        f"paths.cache_dir={tmp_path / 'cache'}", f"paths.runs_dir={tmp_path / 'runs'}",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=[*base, *overrides])


def cache_file(tmp_path: Path) -> Path:
    (path,) = (tmp_path / "cache" / "features").glob("*.safetensors")
    return path


def rewrite_cache(path: Path, **tensors: torch.Tensor) -> None:
    """Replace some tensors of a feature-cache file, keeping its metadata (the run still finds it)."""
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    save_file({**load_file(str(path)), **tensors}, str(path), metadata=metadata)


def test_a_cached_linear_probe_solves_its_head_and_records_how(tmp_path: Path) -> None:
    out = tmp_path / "run"
    metrics = train(make_cfg(tmp_path, "keep_checkpoints=true"), out_dir=out)
    record = read_result(out)
    probe = record["probe"]
    assert probe["solver"] == "lbfgs" and probe["converged"] and probe["class_weight"] is None
    assert record["epochs"] == 0 and record["features_cached"] is True and record["cached_feature_epochs"] == 0
    assert record["trainable_params"] == HEAD_PARAMS == record["trainable_params_start"]
    curve = probe["curve"]
    grid = [10.0 ** e for e in range(-6, 6)]  # 12 points, then up to 4 of the refinement (none beyond the range)
    assert [p["l2"] for p in curve] == sorted(p["l2"] for p in curve) and len(curve) <= 16
    assert all(any(p["l2"] == pytest.approx(l2) for p in curve) for l2 in grid)
    best = max(curve, key=lambda p: (p["val_acc"], -p["val_loss"], p["l2"]))
    assert probe["l2"] == best["l2"]
    # val/acc_best (what optimized_metric returns) is the chosen head's validation accuracy, through Lightning
    assert metrics["val/acc_best"] == pytest.approx(probe["val_acc"], abs=1e-6) == record["metrics"]["val/acc_best"]
    # the head in best.pt is the solved one, and it is what trainer.test measured on the cached test features
    state = torch.load(out / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    cached = load_file(str(cache_file(tmp_path)))
    logits = cached["test_x"] @ state["head.0.weight"].T + state["head.0.bias"]
    assert metrics["test/acc"] == pytest.approx(float((logits.argmax(1) == cached["test_y"]).float().mean()), abs=1e-6)
    assert 0 < probe["solver_time_s"] <= record["train_time_s"]


def test_the_test_split_never_chooses_the_head(tmp_path: Path) -> None:
    """Other test features (noise, shuffled labels) change the test accuracy and nothing chosen; other
    validation labels change the choice."""
    cfg = make_cfg(tmp_path)
    train(cfg, out_dir=tmp_path / "a")
    path = cache_file(tmp_path)
    original = load_file(str(path))
    g = torch.Generator().manual_seed(0)
    rewrite_cache(path, test_x=torch.rand(original["test_x"].shape, generator=g) * 3,
                  test_y=original["test_y"][torch.randperm(len(original["test_y"]), generator=g)])
    train(cfg, out_dir=tmp_path / "b")
    rewrite_cache(path, val_y=original["val_y"][torch.randperm(len(original["val_y"]), generator=g)])
    train(cfg, out_dir=tmp_path / "c")
    a, b, c = (read_result(tmp_path / name) for name in "abc")
    assert b["feature_cache_hit"] is True and c["feature_cache_hit"] is True
    assert b["probe"]["curve"] == a["probe"]["curve"] and b["probe"]["l2"] == a["probe"]["l2"]
    assert b["metrics"]["val/acc_best"] == a["metrics"]["val/acc_best"]
    assert b["metrics"]["test/acc"] < a["metrics"]["test/acc"] - 0.2
    assert c["probe"]["curve"] != a["probe"]["curve"]


@pytest.mark.parametrize("overrides, match", [
    (["strategy.solver=lbfgs", "head=mlp"], r"head=mlp has hidden layers \[128\]\. Fix: head=linear, or strategy.solver=sgd"),
    (["strategy.solver=lbfgs", "head.dropout=0.3"], r"head.dropout=0.3 .*Fix: head.dropout=0, or strategy.solver=sgd"),
    (["strategy.solver=lbfgs", "++dataset.augment={hflip: 0.5}"],
     r"dataset.augment / dataset.mixup ask for augmented images\. Fix: .*strategy.solver=sgd strategy.cache_features=false"),
    (["strategy.solver=lbfgs", "strategy.cache_features=false"], r"Fix: strategy.cache_features=true, or strategy.solver=sgd"),
    (["strategy=lp_ft", "strategy.solver=lbfgs", "head=mlp"], r"strategy.solver=lbfgs: .*head=mlp"),
    (["strategy.probe.class_weight=balanced", "head=mlp"], r"class_weight=balanced applies to the L-BFGS probe.*strategy.solver=lbfgs"),
    (["strategy.solver=newton"], r"strategy.solver='newton' is unknown"),
    (["+strategy.probe.l2_steps=3"], r"strategy.probe.l2_steps.*: not a key of strategy.probe"),
], ids=["mlp", "dropout", "augment", "uncached", "lp_ft-mlp", "class_weight-sgd", "unknown-solver", "unknown-key"])
def test_lbfgs_where_it_cannot_apply_is_refused_before_anything_slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     overrides: list[str], match: str) -> None:
    def no_backbone(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a backbone was built before the config was checked")

    monkeypatch.setattr(transferlab.model.module, "create_backbone", no_backbone)
    with pytest.raises(ConfigError, match=match):
        build_run(make_cfg(tmp_path, *overrides))


def test_auto_trains_an_mlp_head_with_sgd_and_a_linear_one_with_lbfgs(tmp_path: Path) -> None:
    assert build_run(make_cfg(tmp_path)).solves_head
    assert not build_run(make_cfg(tmp_path, "++dataset.augment={hflip: 0.5}")).solves_head
    train(make_cfg(tmp_path, "head=mlp"), out_dir=tmp_path / "mlp")
    record = read_result(tmp_path / "mlp")
    assert "probe" not in record and record["epochs"] == 2 and record["cached_feature_epochs"] == 2


def test_one_example_per_class_and_balanced_class_weight(tmp_path: Path) -> None:
    out = tmp_path / "one"
    metrics = train(make_cfg(tmp_path, "dataset.fraction=1.0", "dataset.per_class=1", "strategy.probe.class_weight=balanced"),
                    out_dir=out)  # the base sets fraction 0.2: per_class alone with fraction at its default
    record = read_result(out)
    assert record["n_train"] == 10 and record["probe"]["class_weight"] == "balanced" and record["probe"]["converged"]
    assert np.isfinite(metrics["test/acc"]) and metrics["val/acc_best"] == pytest.approx(record["probe"]["val_acc"], abs=1e-6)


def test_non_finite_cached_features_fail_the_run_clearly(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    train(cfg, out_dir=tmp_path / "ok")
    path = cache_file(tmp_path)
    x = load_file(str(path))["test_x"]
    x[2, 3] = float("nan")
    rewrite_cache(path, test_x=x)
    with pytest.raises(DataError, match=r"the test features hold 1 non-finite value"):
        train(cfg, out_dir=tmp_path / "bad")
    record = read_result(tmp_path / "bad")
    assert record["status"] == "failed" and "non-finite" in record["error"]


def write_tree(root: Path, n_classes: int, per_class: int) -> Path:
    """``root/c<NN>/<i>.png``: 8×8 images whose colour says the class."""
    g = np.random.default_rng(0)
    for c in range(n_classes):
        base = np.array([(c * 37) % 256, (c * 91) % 256, (c * 53) % 256])
        (root / f"c{c:03d}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(base + g.normal(0, 12, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"c{c:03d}" / f"{i}.png")
    return root


def test_a_probe_on_100_classes_from_a_folder_on_disk(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree", 100, 5)
    cfg = make_cfg(tmp_path, "dataset=folder", f"dataset.root={root}", "dataset.val_fraction=0.2", "dataset.test_fraction=0.2",
                   "dataset.fraction=1.0", "dataset.input_size=16", "dataset.num_workers=0", "logger=csv")
    metrics = train(cfg, out_dir=tmp_path / "run")
    record = read_result(tmp_path / "run")
    assert record["probe"]["converged"] and record["n_train"] == 300 and record["trainable_params"] == 96 * 100 + 100
    assert metrics["test/acc"] > 0.5  # 100 colours: far above chance (0.01)


def test_the_probe_reaches_the_wandb_summary(tmp_path: Path) -> None:
    import wandb
    from wandb_records import read_run

    out = tmp_path / "run"
    try:
        train(make_cfg(tmp_path, "logger=wandb", "logger.mode=offline"), out_dir=out)
    finally:
        wandb.teardown()  # W&B's process-wide settings (its folder) must not leak into later tests
    record = read_result(out)
    summary = read_run(Path(record["wandb"]["dir"])).summary
    assert summary["probe/l2"] == record["probe"]["l2"] and summary["probe/solver_time_s"] == record["probe"]["solver_time_s"]
    assert summary["probe/curve"] == record["probe"]["curve"] and summary["val/acc_best"] == record["metrics"]["val/acc_best"]


def test_lp_ft_fine_tunes_from_the_solved_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The head at the first fine-tuning step is the converged probe's; the Trainer runs the epochs that follow
    ``lp_epochs``, the backbone training from the first of them."""
    solved, at_start = [], []
    real_solve = lifecycle.solve_head

    def spy_solve(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        solved.append(real_solve(*args, **kwargs))
        return solved[-1]

    def spy_start(self) -> None:  # noqa: ANN001
        at_start.append((self.head[-1].weight.detach().clone(), self.trainer.max_epochs,
                         any(p.requires_grad for p in self.backbone.parameters())))

    monkeypatch.setattr(lifecycle, "solve_head", spy_solve)
    monkeypatch.setattr(transferlab.model.module.TransferModule, "on_train_start", spy_start, raising=False)
    train(make_cfg(tmp_path, "strategy=lp_ft", "strategy.lp_epochs=2", "trainer.max_epochs=3"), out_dir=tmp_path / "run")
    record = read_result(tmp_path / "run")
    (fit,) = solved
    weight, max_epochs, backbone_trains = at_start[0]
    torch.testing.assert_close(weight, fit.weight)
    assert max_epochs == 1 and backbone_trains
    assert record["epochs"] == 1 and record["probe"]["l2"] == fit.l2 and record["features_cached"] is True
    assert record["cached_feature_epochs"] == 0 and record["trainable_params"] == record["total_params"]


def test_metrics_stay_apart_after_an_all_correct_first_batch() -> None:
    """A solved head often gets a whole first batch right; torchmetrics' compute groups then merged f1_macro
    with acc_top5 (a wrong F1 on one device, a deadlock across DDP ranks that merged differently)."""
    import torchmetrics

    module = transferlab.model.module.TransferModule({"name": "test_resnet"}, {"num_classes": 10})
    y = torch.arange(10)
    batches = [torch.nn.functional.one_hot(y, 10).float(), torch.randn(10, 10, generator=torch.Generator().manual_seed(0))]
    reference = torchmetrics.classification.MulticlassF1Score(10, average="macro")
    for logits in batches:
        module.test_metrics.update(logits, y)
        reference.update(logits, y)
    computed = module.test_metrics.compute()
    assert float(computed["test/f1_macro"]) == pytest.approx(float(reference.compute()))
    assert float(computed["test/f1_macro"]) != pytest.approx(float(computed["test/acc_top5"]))


@pytest.mark.slow
def test_ddp_lp_ft_fine_tunes_from_the_solved_head_on_two_cpu_processes(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    from conftest import FAST, ROOT

    out = tmp_path / "run"
    args = [*FAST, f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={tmp_path / 'cache'}", "trainer=ddp_cpu",
            "trainer.max_epochs=2", "backbone.name=test_resnet", "backbone.weights=null", "dataset.fraction=0.1",
            "dataset.batch_size=16", "logger=csv", "strategy=lp_ft", "strategy.lp_epochs=1", f"hydra.run.dir={out}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "transferlab.train", *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((out / "result.json").read_text())
    assert record["world_size"] == 2 and record["ranks_in_sync"] is True and record["epochs"] == 1
    assert record["probe"]["solver"] == "lbfgs" and record["trainable_params_start"] == record["total_params"]
