"""The bottleneck-feature cache: same results as recomputing, reuse, invalidation, concurrent writers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn
from torch.utils.data import TensorDataset

from conftest import crash_then_resume
import transferlab.features.cache as features
import transferlab.model.module
from conftest import read_result
from transferlab.identity import digest
from transferlab.run.lifecycle import build_run, train
from transferlab.config.location import config_dir

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs with one intra-op thread (conftest's ``one_thread``)."""


def make_cfg(tmp_path: Path, *overrides: str):
    base = [
        "strategy=linear_probe",
        "backbone.name=test_resnet",
        "backbone.weights=null",
        "dataset.input_size=32",
        "dataset.fraction=0.2",
        "logger=none",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.runs_dir={tmp_path / 'runs'}",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=[*base, *overrides])


def cache_files(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "cache" / "features").glob("*.safetensors")}


def checkpoint_state(out_dir: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return torch.load(out_dir / "checkpoints" / f"{name}.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def head_state(out_dir: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in checkpoint_state(out_dir).items() if k.startswith("head.")}


def test_cached_and_uncached_probes_reach_the_same_head(tmp_path: Path) -> None:
    """Same seed, ``solver=sgd``: the head trained on cached features equals the head trained through the
    frozen backbone.

    Needs the same features (backbone in eval mode, same preprocessing, same numerics) and the same
    data order and head initialisation (extraction must not consume the run's global RNG).
    """
    runs = {}
    for cache in (True, False):
        cfg = make_cfg(tmp_path, f"strategy.cache_features={cache}", "strategy.solver=sgd", "keep_checkpoints=true", "seed=3")
        out = tmp_path / f"cache_{cache}"
        metrics = train(cfg, out_dir=out)
        runs[cache] = (metrics, head_state(out), read_result(out))
    (m_cached, head_cached, rec_cached), (m_plain, head_plain, rec_plain) = runs[True], runs[False]
    assert rec_cached["features_cached"] is True and rec_plain["features_cached"] is False
    assert head_cached.keys() == head_plain.keys() and head_cached
    for name, value in head_cached.items():
        torch.testing.assert_close(value, head_plain[name], rtol=1e-4, atol=1e-6, msg=f"{name} differs")
    assert m_cached["test/acc"] == pytest.approx(m_plain["test/acc"], abs=1e-6)


def test_second_run_reuses_the_cache_without_calling_the_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"extract": 0, "backbone": 0}
    real_extract, real_create = features.extract, transferlab.model.module.create_backbone

    def counting_extract(*args, **kwargs):
        calls["extract"] += 1
        return real_extract(*args, **kwargs)

    def counting_backbone(*args, **kwargs):
        backbone = real_create(*args, **kwargs)
        backbone.register_forward_hook(lambda *_: calls.__setitem__("backbone", calls["backbone"] + 1))
        return backbone

    monkeypatch.setattr(features, "extract", counting_extract)
    monkeypatch.setattr(transferlab.model.module, "create_backbone", counting_backbone)
    cfg = make_cfg(tmp_path, "trainer.max_epochs=1")

    train(cfg, out_dir=tmp_path / "first")
    first = read_result(tmp_path / "first")
    assert first["features_cached"] is True and first["feature_cache_hit"] is False
    assert calls["extract"] == 3 and calls["backbone"] > 0  # train / val / test extracted once
    assert len(cache_files(tmp_path)) == 1

    calls.update(extract=0, backbone=0)
    train(cfg, out_dir=tmp_path / "second")
    second = read_result(tmp_path / "second")
    assert second["status"] == "completed"
    assert second["feature_cache_hit"] is True
    assert calls == {"extract": 0, "backbone": 0}
    assert len(cache_files(tmp_path)) == 1


def _save_weights(path: Path, scale: float) -> str:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    backbone = transferlab.model.module.create_backbone("test_resnet")
    save_file({k: (v * scale if v.is_floating_point() else v).contiguous() for k, v in backbone.state_dict().items()}, str(path))
    return str(path)


def test_preprocessing_backbone_or_weights_change_invalidates_the_cache(tmp_path: Path) -> None:
    weights_a = _save_weights(tmp_path / "a.safetensors", 2.0)
    weights_b = _save_weights(tmp_path / "b.safetensors", 0.5)
    (tmp_path / "copy").mkdir()
    weights_a_copy = str(tmp_path / "copy" / "a.safetensors")
    Path(weights_a_copy).write_bytes(Path(weights_a).read_bytes())

    def run(*overrides: str) -> bool:
        return build_run(make_cfg(tmp_path, *overrides)).feature_cache_hit

    assert run() is False
    assert run() is True  # same config: a hit, no new file
    assert run("dataset.fraction=0.5", "seed=0") is True  # the subset is taken after extraction
    assert run("dataset.fraction=0.5", "dataset.subset_seed=3") is True  # so is its draw
    seen = cache_files(tmp_path)
    assert len(seen) == 1
    for change in (
        ["dataset.input_size=40"],
        ["dataset.crop_pct=0.5"],
        ["backbone.name=test_efficientnet"],
        ["seed=1"],  # weights=null: another random init, other features
        [f"backbone.weights={weights_a}"],
        [f"backbone.weights={weights_b}"],
    ):
        assert run(*change) is False, f"{change} reused a cache entry"
        now = cache_files(tmp_path)
        assert len(now) == len(seen) + 1, f"{change} did not write a new cache file"
        seen = now
    assert run(f"backbone.weights={weights_a_copy}") is True  # the same weights under another name


class SlowBackbone(nn.Module):
    """Sleeps in forward, so concurrent callers overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(0.2)
        return self.proj(x)


def _datasets() -> dict[str, TensorDataset]:
    g = torch.Generator().manual_seed(0)
    return {s: TensorDataset(torch.randn(10, 4, generator=g), torch.arange(10) % 2) for s in features.SPLITS}


def test_concurrent_writers_compute_once_and_leave_a_loadable_cache(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    torch.manual_seed(0)
    backbone, data, key = SlowBackbone(), _datasets(), {"test": "concurrent"}
    n = 3
    barrier = threading.Barrier(n)
    results: list[tuple[dict[str, TensorDataset], bool]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(features.cached_features(backbone, data, tmp_path, key))
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(hit for _, hit in results) == [False] + [True] * (n - 1)  # one computed, the others read
    assert backbone.calls == len(features.SPLITS)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    stored = load_file(str(files[0]))
    for feats, _ in results:
        for split in features.SPLITS:
            torch.testing.assert_close(feats[split].tensors[0], stored[f"{split}_x"])
            torch.testing.assert_close(feats[split].tensors[1], stored[f"{split}_y"])


def test_a_writer_dying_mid_write_leaves_no_partial_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    real_atomic_write = features.atomic_write

    def dying_atomic_write(path, write, mode=None):  # noqa: ANN001, ANN202
        def half_then_die(f):  # noqa: ANN001, ANN202
            whole = io.BytesIO()
            write(whole)
            f.write(whole.getvalue()[: len(whole.getvalue()) // 2])  # half written, then the process dies
            raise KeyboardInterrupt

        real_atomic_write(path, half_then_die, mode)

    data, key = _datasets(), {"test": "dying"}
    monkeypatch.setattr(features, "atomic_write", dying_atomic_write)
    with pytest.raises(KeyboardInterrupt):
        features.cached_features(nn.Linear(4, 3), data, tmp_path, key)
    assert not list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*.tmp"))

    monkeypatch.setattr(features, "atomic_write", real_atomic_write)
    path = tmp_path / f"{digest(key, 20)}.safetensors"
    path.write_bytes(b"not a safetensors file")  # a broken entry (e.g. a full disk) is recomputed
    _, hit = features.cached_features(nn.Linear(4, 3), data, tmp_path, key)
    assert hit is False
    _, hit = features.cached_features(nn.Linear(4, 3), data, tmp_path, key)
    assert hit is True


# ---- lp_ft with solver=sgd: its linear-probing epochs on the cache ------------------------------------
LP_FT = ["strategy=lp_ft", "strategy.solver=sgd", "strategy.lp_epochs=2", "trainer.max_epochs=3", "seed=5", "keep_checkpoints=true"]


def test_lp_ft_trains_its_probe_epochs_on_cached_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backbone never runs while it is frozen (epochs < lp_epochs); the result equals the uncached run."""
    calls: list[tuple[str, int]] = []
    real_features = transferlab.model.module.TransferModule.features

    def spy(self, x):  # noqa: ANN001, ANN202
        calls.append((self.trainer.state.stage.value, self.current_epoch))
        return real_features(self, x)

    monkeypatch.setattr(transferlab.model.module.TransferModule, "features", spy)
    states, records, seen = {}, {}, {}
    for cache in (True, False):
        calls.clear()
        out = tmp_path / f"cache_{cache}"
        train(make_cfg(tmp_path, *LP_FT, f"strategy.cache_features={cache}"), out_dir=out)
        states[cache], records[cache], seen[cache] = checkpoint_state(out), read_result(out), list(calls)

    assert records[True]["features_cached"] is True and records[True]["cached_feature_epochs"] == 2
    assert records[False]["features_cached"] is False and records[False]["cached_feature_epochs"] == 0
    fit_epochs = {epoch for stage, epoch in seen[True] if stage in ("train", "validate", "sanity_check")}
    assert fit_epochs == {2}, f"the backbone ran in epochs {sorted(fit_epochs)} of a cached lp_ft run"
    assert any(stage == "test" for stage, _ in seen[True])  # the fine-tuned backbone is tested on images
    assert {epoch for stage, epoch in seen[False] if stage == "train"} == {0, 1, 2}
    # same examples, same order, same head init, same features: the same model after fine-tuning too
    assert states[True].keys() == states[False].keys()
    for name, value in states[True].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, states[False][name], rtol=1e-4, atol=1e-5, msg=f"{name} differs")
    assert records[True]["metrics"]["test/acc"] == pytest.approx(records[False]["metrics"]["test/acc"], abs=1e-6)


@pytest.mark.parametrize("crash_epoch", [1, 2], ids=["in-probe-stage", "in-finetune-stage"])
def test_cached_lp_ft_resumes_to_the_uninterrupted_weights(tmp_path: Path, crash_epoch: int) -> None:
    from transferlab.features.datamodules import StagedDataModule

    cfg = make_cfg(tmp_path, *LP_FT, "dataset.batch_size=16")
    assert isinstance(build_run(cfg).datamodule, StagedDataModule)
    uninterrupted, resumed = crash_then_resume(tmp_path, cfg, crash_epoch, reload_dataloaders=True)
    for name, value in uninterrupted.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=f"{name} differs after the resume")


def test_staged_data_on_a_trainer_that_never_reloads_is_refused(tmp_path: Path) -> None:
    from transferlab.errors import ConfigError
    from transferlab.run.trainer import make_trainer

    cfg = make_cfg(tmp_path, *LP_FT)
    run = build_run(cfg)
    trainer = make_trainer(cfg, tmp_path / "out", [run.policy], None, run.n_train)
    with pytest.raises(ConfigError, match=r"reload_dataloaders_every_n_epochs=1"):
        trainer.fit(run.module, datamodule=run.datamodule)
