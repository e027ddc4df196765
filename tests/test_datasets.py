"""Real datasets: folder trees, manifests, torchvision, augmentation, loaders, and a clean error for every bad file.

Every test builds its own tiny images in tmp_path; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from transferlab.data.folder import folder_splits
from transferlab.data.loaders import loader_settings
from transferlab.data.registry import load_splits
from transferlab.data.splits import DatasetSplits, FileImageSet, subsample
from transferlab.data.transforms import ToChannels, build_transform
from transferlab.errors import ConfigError, DataError

CONF = Path(__file__).resolve().parents[1] / "conf"
DATA_CFG = {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225), "crop_pct": 1.0, "crop_mode": "center"}


# ---- building test data -------------------------------------------------------------------------
MODES = ("RGB", "L", "RGBA", "P", "I;16", "LA", "P+t")


def save_image(path: Path, i: int, tone: int) -> None:
    """A small image in one of several modes and sizes; ``tone`` sets its brightness (per class)."""
    rng = np.random.default_rng(i + 7 * tone)
    w, h = 10 + (i * 7) % 23, 9 + (i * 5) % 19
    rgb = np.clip(rng.normal(tone, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    mode = MODES[i % len(MODES)]
    img = Image.fromarray(rgb)
    if mode == "I;16":
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    elif mode == "P+t":
        img = img.convert("P")
        img.info["transparency"] = 0
    elif mode != "RGB":
        img = img.convert(mode)
    jpeg = mode in ("RGB", "L") and i % 2 == 0
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path.with_suffix(".jpg" if jpeg else ".png"), **({"transparency": 0} if mode == "P+t" else {}))


def make_tree(root: Path, counts: dict[str, int]) -> Path:
    """``root/<class>/<class>_NN.{jpg,png}`` with ``counts[class]`` images of mixed modes and sizes."""
    for c, (cls, n) in enumerate(counts.items()):
        for i in range(n):
            save_image(root / cls / f"{cls}_{i:02d}", i, 40 + 80 * c)
    return root


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".jpg", ".png"))


def make_manifest(tmp: Path, counts: dict[str, int], with_split: bool = True, name: str = "labels.csv") -> Path:
    """A CSV manifest next to ``images/``, relative paths, string labels, an explicit split column."""
    make_tree(tmp / "images", counts)
    rows = []
    for c, cls in enumerate(counts):
        for j, p in enumerate(image_files(tmp / "images" / cls)):
            split = "test" if j % 5 == 0 else "val" if j % 5 == 1 else "train"
            rows.append({"path": str(p.relative_to(tmp)), "label": cls, **({"split": split} if with_split else {})})
    file = tmp / name
    pd.DataFrame(rows).to_csv(file, index=False)
    return file


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


COUNTS = {"cat": 8, "dog": 9, "owl": 10}


# ---- end to end ---------------------------------------------------------------------------------
def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def run_overrides(tmp: Path, *extra: str) -> list[str]:
    return [
        "strategy=finetune", "backbone.name=test_resnet", "backbone.weights=null", "dataset.input_size=32",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=none", "dataset.batch_size=8",
        f"paths.cache_dir={tmp / 'cache'}", f"paths.runs_dir={tmp / 'runs'}", *extra,
    ]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """One completed fine-tune run on a folder tree (with augmentation and mixup on)."""
    from transferlab.run.lifecycle import train

    tmp = tmp_path_factory.mktemp("folder_run")
    root = make_tree(tmp / "tree", COUNTS)
    cfg = compose(run_overrides(
        tmp, "dataset=folder", f"dataset.root={root}", "dataset.augment={auto_augment: trivialaugment, hflip: 0.5}",
        "dataset.mixup={mixup_alpha: 0.4}", "dataset.num_workers=0",
    ))
    out = tmp / "out"
    metrics = train(cfg, out_dir=out)
    return SimpleNamespace(cfg=cfg, out=out, root=root, metrics=metrics)


def test_folder_tree_trains_end_to_end(folder_run):
    record = json.loads((folder_run.out / "result.json").read_text())
    assert record["status"] == "completed"
    assert record["dataset"] == "folder" and record["strategy"] == "finetune"
    assert 0.0 <= record["metrics"]["test/acc"] <= 1.0
    selection = json.loads((folder_run.out / "train_indices.json").read_text())
    assert selection["class_names"] == ["cat", "dog", "owl"]
    assert selection["n_train"] == record["n_train"] == len(selection["paths"]) == len(selection["indices"])
    for path, label in zip(selection["paths"], selection["labels"]):
        assert Path(path).is_file() and Path(path).parent.name == selection["class_names"][label]


def test_manifest_trains_end_to_end(tmp_path):
    from transferlab.run.lifecycle import train

    file = make_manifest(tmp_path, COUNTS)
    cfg = compose(run_overrides(tmp_path, "dataset=manifest", f"dataset.path={file}", "dataset.per_class=2",
                                "dataset.num_classes=3"))
    metrics = train(cfg, out_dir=tmp_path / "out")
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    assert record["status"] == "completed" and record["n_train"] == 6 and "test/acc" in metrics
    selection = json.loads((tmp_path / "out" / "train_indices.json").read_text())
    train_rows = pd.read_csv(file).query("split == 'train'")
    listed = {str((tmp_path / p).resolve()): lab for p, lab in zip(train_rows.path, train_rows.label)}
    assert all(listed[p] == selection["class_names"][lab] for p, lab in zip(selection["paths"], selection["labels"]))


def test_bad_input_never_loses_a_finished_result(folder_run, tmp_path):
    """A bad config aimed at a finished run's folder is refused before anything is written;
    a bad input in a fresh folder leaves a `failed` record naming the problem, never `completed`."""
    from transferlab.run.lifecycle import train

    before = (folder_run.out / "result.json").read_text()
    bad = compose(run_overrides(tmp_path, "dataset=folder", f"dataset.root={tmp_path / 'nowhere'}"))
    with pytest.raises(DataError, match="nowhere"):  # found by the data fingerprint, before the completed check
        train(bad, out_dir=folder_run.out)
    assert (folder_run.out / "result.json").read_text() == before
    other = compose(run_overrides(tmp_path, "dataset=folder", f"dataset.root={folder_run.root}", "seed=5"))
    with pytest.raises(ConfigError, match="completed run of another config"):
        train(other, out_dir=folder_run.out)
    assert (folder_run.out / "result.json").read_text() == before
    with pytest.raises(DataError, match="nowhere"):
        train(bad, out_dir=tmp_path / "fresh")
    record = json.loads((tmp_path / "fresh" / "result.json").read_text())
    assert record["status"] == "failed" and "nowhere" in record["error"] and "metrics" not in record


# ---- layouts, classes, images -------------------------------------------------------------------
def folder_cfg(root: Path, **kw) -> dict:
    return {"kind": "folder", "root": str(root), "split_seed": 0, "val_fraction": 0.2, "test_fraction": 0.2, **kw}


def test_split_folders_and_missing_split_taken_from_train(tmp_path):
    make_tree(tmp_path / "train", {"b": 10, "a": 10})
    make_tree(tmp_path / "valid", {"a": 2, "b": 3})
    splits = load_splits(folder_cfg(tmp_path, num_classes=None))
    assert splits.class_names == ["a", "b"]  # sorted folder names
    assert len(splits.val) == 5 and all("/valid/" in p for p in splits.val.paths)
    assert len(splits.test) == 4 and all("/train/" in p for p in splits.test.paths)  # 20 % of each class
    assert set(splits.test.paths).isdisjoint(splits.train.paths)
    assert np.bincount(splits.train.labels).tolist() == [8, 8]


def test_images_of_every_mode_reach_the_backbone_shape(tmp_path):
    root = make_tree(tmp_path, {"x": len(MODES) * 2})
    files = FileImageSet(np.asarray([str(p) for p in image_files(root)], dtype=object), np.zeros(len(MODES) * 2, dtype=np.int64))
    assert {Image.open(p).mode for p in files.paths} >= {"RGB", "L", "RGBA", "P", "I;16", "LA"}
    for in_chans in (3, 1):
        tf = build_transform(DATA_CFG, in_chans)
        for i in range(len(files)):
            x = tf(files.load(i))
            assert x.shape == (in_chans, 32, 32) and torch.isfinite(x).all()


def test_sixteen_bit_keeps_brightness_and_alpha_goes_black(tmp_path):
    for name, level in (("dark", 1000), ("bright", 60000)):
        Image.fromarray(np.full((8, 8), level, dtype=np.uint16)).save(tmp_path / f"{name}.png")
    dark, bright = (np.asarray(ToChannels(3)(Image.open(tmp_path / f"{n}.png"))) for n in ("dark", "bright"))
    assert dark.max() == round(1000 / 65535 * 255) and bright.min() == round(60000 / 65535 * 255)
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white but fully transparent
    assert np.asarray(ToChannels(3)(Image.fromarray(rgba, "RGBA"))).max() == 0


def test_file_order_and_split_do_not_depend_on_listing_order(tmp_path, monkeypatch):
    """The same files give the same splits on any file system, whatever order it lists them in."""
    import transferlab.data.folder as folder_source

    root = make_tree(tmp_path, COUNTS)
    a = load_splits(folder_cfg(root))
    real_walk = os.walk

    def reversed_walk(top, **kw):
        for dirpath, dirnames, filenames in real_walk(top, **kw):
            dirnames.reverse()
            yield dirpath, dirnames, filenames[::-1]

    monkeypatch.setattr(folder_source.os, "walk", reversed_walk)
    b = load_splits(folder_cfg(root))
    assert list(a.train.paths) == list(b.train.paths) and list(a.test.paths) == list(b.test.paths)
    c = load_splits(folder_cfg(root, split_seed=1))
    assert list(c.test.paths) != list(a.test.paths)


def test_manifest_int_labels_index_classes_and_splits_are_carved(tmp_path):
    make_tree(tmp_path / "img", {"c0": 6, "c1": 6})
    rows = [{"path": str(p), "label": i // 6} for i, p in enumerate(image_files(tmp_path / "img"))]  # absolute paths
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    cfg = {"kind": "manifest", "path": str(tmp_path / "m.csv"), "classes": ["zero", "one"], "val_fraction": 0.2,
           "test_fraction": 0.2, "split_seed": 0}
    splits = load_splits(cfg)
    assert splits.class_names == ["zero", "one"]
    for part in (splits.train, splits.val, splits.test):
        assert all(Path(p).parent.name == f"c{lab}" for p, lab in zip(part.paths, part.labels))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 2, 2)


def test_torchvision_eurosat_layout_offline(tmp_path):
    """EuroSAT is an ImageFolder under root/eurosat/2750: read as files, split by split_seed, scanned."""
    root = tmp_path / "tv"
    make_tree(root / "eurosat" / "2750", {"Forest": 10, "River": 10})
    cfg = {"kind": "torchvision", "tv_name": "EuroSAT", "root": str(root), "download": False, "num_classes": 2,
           "val_fraction": 0.1, "test_fraction": 0.2, "split_seed": 0}
    splits = load_splits(cfg)
    assert splits.class_names == ["Forest", "River"] and isinstance(splits.train, FileImageSet)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (14, 2, 4)
    truncate(image_files(root / "eurosat" / "2750" / "River")[3])
    with pytest.raises(DataError, match=r"River_03\.png.*on_bad_file=skip"):
        load_splits(cfg)


def test_torchvision_arrays_become_images():
    from transferlab.data.torchvision_sets import _images

    chw = SimpleNamespace(data=np.zeros((4, 3, 8, 6), dtype=np.uint8), labels=np.array([0, 1, 0, 1]))
    images = _images(chw, "SVHN")
    assert images.images.shape == (4, 8, 6, 3) and images.load(0).size == (6, 8)


# ---- bad input: each error names the file or setting and the fix ---------------------------------
def test_missing_or_unset_root(tmp_path):
    with pytest.raises(DataError, match=r"dataset.root=.*nowhere.*does not exist.*Fix"):
        load_splits(folder_cfg(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"needs dataset.root=DIR"):
        load_splits({"kind": "folder", "root": "???"})


def test_empty_class_folder(tmp_path):
    make_tree(tmp_path, {"a": 4, "b": 4})
    (tmp_path / "empty_one").mkdir()
    (tmp_path / "empty_one" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder .*empty_one holds no images.*Fix: add images"):
        load_splits(folder_cfg(tmp_path))


@pytest.mark.parametrize("damage", ["garbage", "truncated_jpeg", "truncated_png"])
def test_corrupt_image_errors_naming_the_file(tmp_path, damage):
    make_tree(tmp_path, COUNTS)
    files = image_files(tmp_path / "dog")
    if damage == "garbage":
        victim = files[0].with_name("junk.jpg")
        victim.write_bytes(b"this is not an image")
    elif damage == "truncated_jpeg":  # big enough that the cut falls in the pixel data, past the headers
        victim = files[0].with_name("photo.jpg")
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(victim)
        truncate(victim)
        with Image.open(victim) as img:
            img.verify()  # the header alone looks fine: only decoding finds the damage
    else:
        victim = next(p for p in files if p.suffix == ".png")
        truncate(victim)
    with pytest.raises(DataError, match=rf"{victim.name}.*Fix: replace or delete.*on_bad_file=skip"):
        load_splits(folder_cfg(tmp_path))


def test_skip_mode_drops_bad_files_counting_them(tmp_path):
    make_tree(tmp_path, COUNTS)
    truncate(image_files(tmp_path / "dog")[0])
    (tmp_path / "owl" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image file\(s\) of 28"):
        splits = folder_splits(**folder_cfg(tmp_path, on_bad_file="skip", val_fraction=0.0, test_fraction=0.0))
    assert np.bincount(splits.train.labels).tolist() == [8, 8, 10]  # no wrong label, nothing else lost
    assert all(Path(p).parent.name == splits.class_names[lab] for p, lab in zip(splits.train.paths, splits.train.labels))
    with pytest.raises(ConfigError, match=r"on_bad_file='ignore' must be one of"):
        load_splits(folder_cfg(tmp_path, on_bad_file="ignore"))


def test_manifest_bad_columns_labels_and_files(tmp_path):
    file = make_manifest(tmp_path, COUNTS)
    table = pd.read_csv(file)
    table.rename(columns={"label": "class"}).to_csv(tmp_path / "cols.csv", index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['label'\].*has \['path', 'class', 'split'\].*Fix"):
        load_splits({"kind": "manifest", "path": str(tmp_path / "cols.csv")})
    with pytest.raises(DataError, match=r"not in dataset.classes=\['cat', 'dog'\].*unknown: \['owl'\].*Fix"):
        load_splits({"kind": "manifest", "path": str(file), "classes": ["cat", "dog"]})
    table.loc[3, "path"] = "images/cat/missing.png"
    table.to_csv(tmp_path / "gone.csv", index=False)
    with pytest.raises(DataError, match=rf"resolve against {tmp_path}.*missing\.png \(file not found\).*Fix"):
        load_splits({"kind": "manifest", "path": str(tmp_path / "gone.csv")})
    with pytest.raises(DataError, match=r"manifest .*nope.csv does not exist"):
        load_splits({"kind": "manifest", "path": str(tmp_path / "nope.csv")})


def test_verify_false_checks_existence_and_a_bad_file_still_fails_by_name(tmp_path):
    make_tree(tmp_path, COUNTS)
    victim = image_files(tmp_path / "dog")[1]
    truncate(victim)
    splits = folder_splits(**folder_cfg(tmp_path, verify=False, val_fraction=0.0, test_fraction=0.0))
    assert len(splits.train) == 27  # not decoded up front
    with pytest.raises(DataError, match=rf"cannot read image {victim}.*Fix: replace or remove"):
        splits.train.load(list(splits.train.paths).index(str(victim)))
    manifest = make_manifest(tmp_path / "m", COUNTS)
    gone = image_files(tmp_path / "m" / "images" / "owl")[2]
    gone.unlink()
    with pytest.raises(DataError, match=rf"{gone} \(file not found\)"):
        load_splits({"kind": "manifest", "path": str(manifest), "verify": False})


def test_parquet_manifest(tmp_path):
    csv = make_manifest(tmp_path, COUNTS)
    parquet = tmp_path / "labels.parquet"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        parquet.write_bytes(b"PAR1 but no reader")
        with pytest.raises(DataError, match=r"Parquet needs pyarrow.*pip install pyarrow.*or save the manifest as CSV"):
            load_splits({"kind": "manifest", "path": str(parquet)})
        return
    pd.read_csv(csv).to_parquet(parquet)
    assert load_splits({"kind": "manifest", "path": str(parquet)}).class_names == ["cat", "dog", "owl"]


def test_class_count_and_names_are_checked(tmp_path):
    make_tree(tmp_path, COUNTS)
    with pytest.raises(DataError, match=r"dataset.num_classes=5 but the data has 3 classes.*num_classes=3"):
        load_splits(folder_cfg(tmp_path, num_classes=5))
    with pytest.raises(DataError, match=r"class folder\(s\) \['owl'\] that are not in dataset.classes"):
        load_splits(folder_cfg(tmp_path, classes=["cat", "dog"]))
    assert load_splits(folder_cfg(tmp_path, classes=["owl", "cat", "dog"])).class_names == ["owl", "cat", "dog"]


def test_per_class_larger_than_smallest_class(tmp_path):
    splits = folder_splits(**folder_cfg(make_tree(tmp_path, COUNTS), val_fraction=0.0, test_fraction=0.0))
    with pytest.raises(DataError, match=r"per_class=9 but class 'cat' has only 8 .*Fix: use dataset.per_class ≤ 8"):
        subsample(splits.train.labels, per_class=9, class_names=splits.class_names)


@pytest.mark.parametrize("name, folder", [("CIFAR10", "cifar-10-batches-py"), ("Flowers102", "flowers-102"),
                                          ("OxfordIIITPet", "oxford-iiit-pet")])
def test_torchvision_offline_without_files(tmp_path, name, folder):
    cfg = {"kind": "torchvision", "tv_name": name, "root": str(tmp_path), "download": False}
    with pytest.raises(DataError, match=rf"{name} not found under dataset.root={tmp_path}.*download=true.*{tmp_path / folder}"):
        load_splits(cfg)
    with pytest.raises(ConfigError, match=r"Did you mean CIFAR10"):
        load_splits({**cfg, "tv_name": "cifar10"})


def test_unknown_augment_option_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['flip'\].*hflip"):
        build_transform(DATA_CFG, 3, training=True, flip=0.5)


# ---- augmentation, mixup, loaders ---------------------------------------------------------------
def test_augmentation_trains_only(tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    for aug in ({"scale": (0.3, 1.0), "hflip": 0.5}, {"auto_augment": "rand-m9-mstd0.5"}, {"auto_augment": "trivialaugment"}):
        train_tf = build_transform(DATA_CFG, 3, training=True, **aug)
        torch.manual_seed(0)
        outs = [train_tf(img) for _ in range(6)]
        assert outs[0].shape == (3, 32, 32) and any(not torch.equal(outs[0], o) for o in outs[1:])
    eval_tf = build_transform(DATA_CFG, 3, training=False, hflip=1.0)  # options ignored for evaluation
    assert torch.equal(eval_tf(img), eval_tf(img))


def test_cached_feature_run_ignores_augmentation(tmp_path):
    from transferlab.features.datamodules import TensorDataModule
    from transferlab.run.lifecycle import build_run

    root = make_tree(tmp_path / "tree", {"a": 6, "b": 6})
    cfg = compose(run_overrides(tmp_path, "dataset=folder", f"dataset.root={root}", "strategy=linear_probe",
                                "dataset.augment={hflip: 0.5}", "dataset.mixup={mixup_alpha: 0.2}"))
    with pytest.warns(UserWarning, match=r"augment / dataset.mixup are ignored.*cached features"):
        run = build_run(cfg)
    assert isinstance(run.datamodule, TensorDataModule) and run.module.mixup is None
    cfg = compose(run_overrides(tmp_path, "dataset=folder", f"dataset.root={root}", "dataset.augment={hflip: 0.5}",
                                "dataset.mixup={mixup_alpha: 0.2}"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        run = build_run(cfg)
    assert run.module.mixup is not None and run.datamodule.train_transform is not run.datamodule.eval_transform


def test_mixup_soft_targets_with_odd_batch():
    from transferlab.config.schema import BackboneConfig
    from transferlab.model.module import RunChoices, TransferModule

    resnet = BackboneConfig(name="test_resnet")
    module = TransferModule(resnet, RunChoices(num_classes=3, mixup={"mixup_alpha": 0.4}))
    x, y = torch.randn(5, 3, 16, 16), torch.tensor([0, 1, 2, 1, 0])
    mixed, soft = module._mix(x.clone(), y)
    assert mixed.shape == x.shape and soft.shape == (5, 3)
    assert torch.allclose(soft.sum(1), torch.ones(5))
    assert torch.equal(soft[4], torch.tensor([1.0, 0.0, 0.0])) and torch.equal(mixed[4], x[4])  # odd one out: unmixed
    assert not torch.equal(mixed[:4], x[:4])
    assert TransferModule(resnet, RunChoices(num_classes=3, mixup={})).mixup is None
    with pytest.raises(ConfigError, match=r"dataset.mixup=.*Mixup rejects it"):
        TransferModule(resnet, RunChoices(num_classes=3, mixup={"mixup_alpha": 0.2, "alpha": 1.0}))


def test_loader_settings_auto():
    cpus = len(os.sched_getaffinity(0))
    assert loader_settings(decode_on_the_fly=True)["num_workers"] == min(4, cpus - 1)
    assert loader_settings(decode_on_the_fly=False) == {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
    assert loader_settings(cuda=True, decode_on_the_fly=False)["pin_memory"] is True
    assert loader_settings(2, "false", "auto") == {"num_workers": 2, "pin_memory": False, "persistent_workers": True}
    assert loader_settings(0, True, True)["persistent_workers"] is False  # needs workers
    with pytest.raises(ConfigError, match=r"num_workers='many' must be auto or an integer"):
        loader_settings("many")


def test_fingerprint_follows_the_files(tmp_path):
    root = make_tree(tmp_path, {"a": 3, "b": 3})
    first = folder_splits(**folder_cfg(root)).fingerprint()
    assert folder_splits(**folder_cfg(root)).fingerprint() == first
    victim = image_files(root / "a")[1]
    Image.new("RGB", (5, 5)).save(victim)
    assert folder_splits(**folder_cfg(root)).fingerprint() != first


# ---- fractions: stratified, nested, deterministic for every dataset kind ----------------------------
@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """Splits per (kind, split_seed), built once: digits, glyphs, folder and manifest."""
    tmp = tmp_path_factory.mktemp("kinds")
    counts = {"a": 14, "b": 21, "c": 30}
    configs = {
        "digits": {"kind": "digits"},
        "glyphs": {"kind": "glyphs", "num_classes": 5, "examples_per_class": 24},
        "folder": folder_cfg(make_tree(tmp / "tree", counts)),
        "manifest": {"kind": "manifest", "path": str(make_manifest(tmp / "m", counts, with_split=False)),
                     "val_fraction": 0.2, "test_fraction": 0.2},
    }
    cache: dict[tuple[str, int], DatasetSplits] = {}

    def get(kind: str, split_seed: int) -> DatasetSplits:
        if (kind, split_seed) not in cache:
            cache[kind, split_seed] = load_splits({**configs[kind], "split_seed": split_seed})
        return cache[kind, split_seed]

    get.configs = configs  # type: ignore[attr-defined]
    return get


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["digits", "glyphs", "folder", "manifest"]),
    split_seed=st.integers(0, 1),
    f=st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)).filter(lambda t: t[0] != t[1]).map(sorted),
)
def test_fractions_nested_stratified_deterministic(kinds, kind, split_seed, f):
    splits = kinds(kind, split_seed)
    labels = splits.train.labels
    sizes = np.bincount(labels)
    picks = []
    for frac in f:
        expected = np.floor(frac * sizes + 0.5).astype(int)
        if (expected == 0).any():
            with pytest.raises(DataError, match="leaves class .* with no example"):
                subsample(labels, frac, seed=split_seed, class_names=splits.class_names)
            return
        idx = subsample(labels, frac, seed=split_seed, class_names=splits.class_names)
        assert np.bincount(labels[idx], minlength=len(sizes)).tolist() == expected.tolist()
        assert np.array_equal(idx, subsample(labels.copy(), frac, seed=split_seed))
        picks.append(idx)
    small, large = picks
    assert set(small) <= set(large)
    k = int(min(sizes.min(), max(1, round(f[0] * 10))))
    assert set(subsample(labels, per_class=k, seed=split_seed)) <= set(subsample(labels, per_class=sizes.min(), seed=split_seed))


def test_splits_are_deterministic_for_a_split_seed(kinds):
    for kind, cfg in kinds.configs.items():
        a, b = load_splits({**cfg, "split_seed": 3}), kinds(kind, 0)
        again = load_splits({**cfg, "split_seed": 3})
        assert np.array_equal(a.train.labels, again.train.labels)
        if isinstance(a.train, FileImageSet):
            assert list(a.train.paths) == list(again.train.paths) and list(a.train.paths) != list(b.train.paths)
        else:
            assert np.array_equal(a.train.images, again.train.images) and not np.array_equal(a.train.images, b.train.images)
