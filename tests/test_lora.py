"""strategy=lora: what trains (adapters and head, nothing else), the parameter counts, the merged export, exact
resume after a kill, the feature cache left out, and a bad target module refused with the candidates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from conftest import crash_then_resume, make_cfg, read_result
from test_strategies import COMMON, _changed, _fit
from transferlab.errors import ConfigError
from transferlab.model.adapters import LoraSpec
from transferlab.model.module import RunChoices, TransferModule
from transferlab.run.checkpoints import BEST, LAST, load_checkpoint_safely
from transferlab.run.lifecycle import build_run, train

#: the modules a default LoRA adapts, written out here (not taken from transferlab.model.adapters): the ViT
#: blocks' fused qkv, attention projection and MLP; every convolution of a ResNet's stages, not its stem
EXPECTED_TARGETS = {
    "test_vit": r"blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)",
    "test_resnet": r"layer\d\.\d+\.(conv\d|downsample\.\d)",
}


def _adapter_size(module: nn.Module, rank: int) -> int:
    """LoRA's parameters for one module: A (in → rank, the module's kernel) and B (rank → out, 1×1), no bias."""
    if isinstance(module, nn.Linear):
        return rank * (module.in_features + module.out_features)
    assert isinstance(module, nn.Conv2d)
    kh, kw = module.kernel_size
    return rank * module.in_channels * kh * kw + module.out_channels * rank


@pytest.mark.parametrize("family", ["test_vit", "test_resnet"])
def test_lora_trains_only_the_adapters_and_the_head(tmp_path: Path, family: str) -> None:
    run, before = _fit(tmp_path, f"backbone.name={family}", "strategy=lora", "strategy.rank=4", "trainer.max_epochs=2")
    params = dict(run.module.named_parameters())
    adapters = {n for n in params if ".lora_A." in n or ".lora_B." in n}
    head = {n for n in params if n.startswith("head.")}
    assert adapters and set(run.module.adapter_names) == adapters
    assert {n for n, p in params.items() if p.requires_grad} == adapters | head
    changed = _changed(run, before)  # weights, and BatchNorm running statistics (buffers)
    assert changed <= adapters | head, f"frozen weights or statistics moved: {sorted(changed - adapters - head)[:5]}"
    assert changed & head and changed & adapters, "the head and the adapters must both train"
    frozen_norms = [m for m in run.module.backbone.modules() if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm))]
    assert frozen_norms and not any(m.training for m in frozen_norms), "norm layers of a LoRA run stay in eval mode"
    # the counts: an adapter on exactly the family's default modules, each r·(in + out) (convs: r·in·k² + out·r)
    plain = timm.create_model(family, num_classes=0, img_size=32) if "vit" in family else timm.create_model(family, num_classes=0)
    targets = {n: m for n, m in plain.named_modules()
               if re.fullmatch(EXPECTED_TARGETS[family], n) and isinstance(m, (nn.Linear, nn.Conv2d))}
    assert {n.split(".lora_")[0].removeprefix("backbone.") for n in adapters} == set(targets)
    expected = sum(_adapter_size(m, 4) for m in targets.values()) + sum(params[n].numel() for n in head)
    assert run.policy.parameter_counts(run.module) == (expected, sum(p.numel() for p in params.values()))
    assert not run.features_cached and run.datamodule.__class__.__name__ == "ImageDataModule", "LoRA never trains on cached features"


@pytest.mark.parametrize("family", ["test_vit", "test_resnet"])
def test_the_merged_export_equals_the_adapted_model(family: str) -> None:
    adapted = TransferModule({"name": family}, RunChoices(num_classes=10, input_size=32, adapter=LoraSpec(rank=4, alpha=8)))
    with torch.no_grad():  # B starts at zero (adapted = base): give every adapter a real contribution
        for name, param in adapted.named_parameters():
            if ".lora_B." in name:
                param.normal_(0, 0.2)
    adapted.eval()
    x = torch.randn(4, 3, 32, 32)
    exported = adapted.export_state_dict()
    plain = TransferModule({"name": family}, RunChoices(num_classes=10, input_size=32)).eval()
    assert set(exported) == set(plain.state_dict()), "the export has the keys of a model without adapters"
    base_logits = plain(x)
    plain.load_state_dict(exported)
    with torch.no_grad():
        merged, logits = plain(x), adapted(x)
    assert (logits - base_logits).abs().max() > 1e-2, "the adapters must change the output for this test to mean anything"
    torch.testing.assert_close(merged, logits, rtol=1e-4, atol=1e-5)
    assert adapted.adapter_names, "exporting must not remove the training model's adapters"


def test_a_lora_run_writes_a_plain_merged_best_pt_and_its_counts(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, *COMMON, "backbone.name=test_resnet", "strategy=lora", "strategy.rank=4", "keep_checkpoints=true")
    train(cfg, tmp_path / "run")
    record = read_result(tmp_path / "run")
    assert record["status"] == "completed" and not record["features_cached"] and record["cached_feature_epochs"] == 0
    ckpt = load_checkpoint_safely(tmp_path / "run" / "checkpoints" / LAST)  # one epoch: the best is the last
    adapted = TransferModule(**ckpt["hyper_parameters"]).eval()
    adapted.load_state_dict(ckpt["state_dict"])
    trainable = sum(v.numel() for k, v in ckpt["state_dict"].items() if ".lora_" in k or k.startswith("head."))
    assert record["trainable_params"] == trainable and record["total_params"] == sum(p.numel() for p in adapted.parameters())
    best = torch.load(tmp_path / "run" / "checkpoints" / BEST, weights_only=True)
    assert set(best) == set(TransferModule(**{**ckpt["hyper_parameters"], "choices": {**ckpt["hyper_parameters"]["choices"],
                                                                                      "adapter": None}}).state_dict())
    backbone = timm.create_model("test_resnet", num_classes=0).eval()
    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in best.items() if k.startswith("backbone.")})  # strict
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), adapted.backbone(x), rtol=1e-4, atol=1e-5)


def test_lora_resumes_exactly_after_a_kill(tmp_path: Path, one_thread: None) -> None:
    # dropout on: the adapters' dropout draws from the global RNG, which each epoch reseeds (data.sampler)
    cfg = make_cfg(tmp_path, "backbone.name=test_resnet", "backbone.weights=null", "strategy=lora", "strategy.rank=4",
                   "strategy.dropout=0.1", "dataset.per_class=4", "dataset.batch_size=16", "trainer.max_epochs=2")
    uninterrupted, resumed = crash_then_resume(tmp_path, cfg, crash_epoch=1)
    assert any(".lora_" in k for k in uninterrupted)
    for name, value in uninterrupted.items():
        assert torch.equal(value, resumed[name]), name


def test_an_unknown_target_module_lists_the_candidates(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, *COMMON, "backbone.name=test_vit", "strategy=lora", "strategy.target_modules=[attn.qvk]")
    with pytest.raises(ConfigError, match=r"strategy.target_modules: 'attn.qvk' names no Linear or ungrouped Conv2d module of "
                       r"test_vit. Did you mean attn.qkv.*Fix: choose among its candidates patch_embed.proj, attn.qkv, attn.proj, "
                       r"mlp.fc1, mlp.fc2"):
        build_run(cfg)
    named = build_run(make_cfg(tmp_path, *COMMON, "backbone.name=test_vit", "strategy=lora", "strategy.target_modules=[qkv]"))
    assert {n.split(".lora_")[0] for n in named.module.adapter_names} == {f"backbone.blocks.{i}.attn.qkv" for i in range(len(named.module.backbone.blocks))}
