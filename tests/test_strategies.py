"""Freeze policies over three backbone families: what trains, what stays put, at which LR."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import FAMILIES, ROOT, make_cfg
from transferlab.errors import ConfigError
from transferlab.features.datamodules import StagedDataModule
from transferlab.strategies.base import requires_grad_counts
from transferlab.strategies.policies import Finetune, Gradual, LinearProbe, LpFt
from transferlab.run.assembly import Run
from transferlab.run.lifecycle import build_run
from transferlab.run.trainer import make_trainer

COMMON = ["backbone.weights=null", "dataset.fraction=0.15", "dataset.batch_size=32"]


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _fit(tmp_path: Path, *overrides: str) -> tuple[Run, dict[str, torch.Tensor]]:
    cfg = make_cfg(tmp_path, *COMMON, *overrides)
    run = build_run(cfg)
    before = _snapshot(run.module)
    trainer = make_trainer(cfg, tmp_path / "out", [run.policy], logger=None, n_train=run.n_train, checkpoints=False,
                           reload_dataloaders=isinstance(run.datamodule, StagedDataModule))
    trainer.fit(run.module, datamodule=run.datamodule)
    return run, before


def _changed(run: Run, before: dict[str, torch.Tensor]) -> set[str]:
    after = run.module.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def _block_of(run: Run) -> dict[str, int]:
    return {name: i for i, block in enumerate(run.module.blocks) for name in block}


@pytest.mark.parametrize("family", FAMILIES)
def test_linear_probe_freezes_backbone_and_its_batchnorm_stats(tmp_path: Path, family: str) -> None:
    # cache_features=false: the backbone really runs in every step (and Lightning toggles train/eval around validation)
    run, before = _fit(
        tmp_path, f"backbone.name={family}", "strategy=linear_probe", "strategy.cache_features=false", "trainer.max_epochs=2"
    )
    changed = _changed(run, before)
    assert any(k.startswith("head.") for k in changed), "the head did not train"
    leaked = sorted(k for k in changed if k.startswith("backbone."))  # weights and BN running stats / num_batches_tracked
    assert not leaked, f"frozen backbone changed: {leaked[:5]}"
    assert not run.module.backbone.training, "the frozen backbone must stay in eval mode"
    trainable, _ = requires_grad_counts(run.module)
    assert trainable == sum(p.numel() for p in run.module.head.parameters())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("k", [1, 2])
def test_finetune_top_k_unfreezes_exactly_the_top_blocks(tmp_path: Path, family: str, k: int) -> None:
    run, before = _fit(tmp_path, f"backbone.name={family}", "strategy=finetune", f"strategy.unfreeze_top_k={k}")
    n = len(run.module.blocks)
    block_of = _block_of(run)
    params = dict(run.module.named_parameters())
    changed = _changed(run, before)
    for name, param in params.items():
        if not name.startswith("backbone."):
            continue
        top = block_of[name] >= n - k
        assert param.requires_grad == top, f"{name} (block {block_of[name]} of {n}) requires_grad={param.requires_grad}"
        if not top:
            assert name not in changed, f"frozen {name} changed"
    moved_blocks = {block_of[c] for c in changed if c in block_of}
    assert moved_blocks == set(range(n - k, n)), f"blocks that trained: {sorted(moved_blocks)}, expected the top {k} of {n}"


@pytest.mark.parametrize("family", FAMILIES)
def test_finetune_backbone_lr_is_the_scaled_one(tmp_path: Path, family: str) -> None:
    cfg = make_cfg(tmp_path, *COMMON, f"backbone.name={family}", "strategy=finetune", "strategy.backbone_lr_scale=0.05", "optimizer.lr=0.002")
    module = build_run(cfg).module
    groups = module.param_groups()
    head = [g for g in groups if g["name"].startswith("head")]
    backbone = [g for g in groups if g["name"].startswith("backbone")]
    assert head and backbone
    assert all(g["lr"] == pytest.approx(0.002) for g in head)
    assert all(g["lr"] == pytest.approx(0.002 * 0.05) for g in backbone)
    assert sum(len(g["params"]) for g in groups) == len(list(module.parameters()))
    # the scheduler multiplies, it never resets the ratio: after configure_optimizers every group keeps its LR
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter sits in two groups"


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_decay_lowers_lr_geometrically_towards_the_stem(tmp_path: Path, family: str) -> None:
    cfg = make_cfg(tmp_path, *COMMON, f"backbone.name={family}", "strategy=finetune", "strategy.backbone_lr_scale=0.5", "+strategy.layer_decay=0.7")
    groups = [g for g in build_run(cfg).module.param_groups() if g["name"].startswith("backbone") and "no_decay" not in g["name"]]
    by_layer = sorted(((int(g["name"].split(".")[1]), g["lr"]) for g in groups))
    top = max(i for i, _ in by_layer)
    for layer, lr in by_layer:
        assert lr == pytest.approx(1e-3 * 0.5 * 0.7 ** (top - layer)), (layer, lr)
    assert len(by_layer) >= 3


class _Stub(nn.Module):
    """A module with three 'blocks' and a head, enough for the schedule logic."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 2), nn.Linear(2, 2))
        self.head = nn.Linear(2, 2)
        self.blocks = [["backbone.0.weight", "backbone.0.bias", "backbone.1.weight", "backbone.1.bias"],
                       ["backbone.2.weight", "backbone.2.bias"], ["backbone.3.weight", "backbone.3.bias"]]

    def trainable_blocks(self) -> list[int]:
        params = dict(self.named_parameters())
        return [i for i, b in enumerate(self.blocks) if all(params[n].requires_grad for n in b)]


def test_gradual_unfreezes_from_the_top_at_milestones() -> None:
    stub, policy = _Stub().train(), Gradual(milestones=[2, 4], blocks_per_milestone=1)
    seen = {}
    for epoch in range(6):
        policy.apply(stub, epoch)  # type: ignore[arg-type]
        seen[epoch] = stub.trainable_blocks()
        assert stub.head.weight.requires_grad
    assert seen == {0: [], 1: [], 2: [2], 3: [2], 4: [1, 2], 5: [1, 2]}
    assert not stub.backbone[1].training, "a frozen block's BatchNorm must be in eval mode"


def test_lp_ft_switches_from_probe_to_full_finetune() -> None:
    stub, policy = _Stub().train(), LpFt(lp_epochs=2)
    trainable = []
    for epoch in range(4):
        policy.apply(stub, epoch)  # type: ignore[arg-type]
        trainable.append(stub.trainable_blocks())
    assert trainable == [[], [], [0, 1, 2], [0, 1, 2]]


def test_policy_state_survives_a_checkpoint_round_trip() -> None:
    policy = Finetune(unfreeze_top_k=2)
    policy.apply(_Stub(), 0)  # type: ignore[arg-type]
    state = policy.state_dict()
    restored = Finetune(unfreeze_top_k=2)
    restored.load_state_dict(state)
    assert restored.n_trainable_blocks == 2
    with pytest.raises(ValueError, match="strategy"):
        LinearProbe().load_state_dict(state)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("strategy", ["scratch", "linear_probe", "finetune", "gradual", "lp_ft"])
def test_every_strategy_trains_every_family(tmp_path: Path, family: str, strategy: str) -> None:
    extra = ["strategy.milestones=[1]"] if strategy == "gradual" else ["strategy.lp_epochs=1"] if strategy == "lp_ft" else []
    run, before = _fit(tmp_path, f"backbone.name={family}", f"strategy={strategy}", "trainer.max_epochs=2", *extra)
    changed = _changed(run, before)
    assert any(k.startswith("head.") for k in changed)
    backbone_moved = any(k.startswith("backbone.") for k in changed)
    assert backbone_moved == (strategy != "linear_probe"), f"{strategy}: backbone moved={backbone_moved}"


def test_bitfit_the_docs_example_trains_the_biases_and_the_head_only(tmp_path: Path) -> None:
    """docs/strategies.md "Add a strategy": the class it shows is the shipped one, and ``strategy=bitfit`` does what it says."""
    page = (ROOT / "docs" / "strategies.md").read_text()
    shown = re.search(r"```python\n(class BitFit\(FreezePolicy\):.*?)```", page, re.S)
    assert shown, "docs/strategies.md lacks the BitFit example"
    assert shown.group(1).strip() in (ROOT / "src/transferlab/strategies/bitfit.py").read_text()
    assert (ROOT / "conf/strategy/bitfit.yaml").read_text().strip() in page
    run, before = _fit(tmp_path, "backbone.name=test_resnet", "strategy=bitfit")
    params = dict(run.module.named_parameters())
    moved = {k for k in _changed(run, before) if k in params}
    expected = {n for n in params if n.startswith("head.") or n.endswith(".bias")}
    assert {n for n, p in params.items() if p.requires_grad} == expected
    # timm zero-initialises each block's last BatchNorm scale, so the biases before it get no gradient at all
    assert moved <= expected, f"frozen weights moved: {sorted(moved - expected)[:5]}"
    assert any(n.startswith("backbone.") and n.endswith(".bias") for n in moved), "no backbone bias trained"
    assert run.policy.parameter_counts(run.module)[0] == sum(params[n].numel() for n in expected)


def test_a_strategy_outside_the_package_is_named_by_its_target(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, *COMMON, "strategy=scratch", "+strategy._target_=transferlab.strategies.bitfit.BitFit")
    assert type(build_run(cfg).policy).__name__ == "BitFit"
    bad = make_cfg(tmp_path, *COMMON, "strategy=scratch", "+strategy._target_=collections.OrderedDict")
    with pytest.raises(ConfigError, match=r"strategy._target_='collections.OrderedDict' is not a transferlab FreezePolicy"):
        build_run(bad)
