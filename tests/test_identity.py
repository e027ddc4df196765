"""A run's identity covers what it trains on: paths absolute, the data's fingerprint in the config hash,
flat folder names; a completed run whose data changed is never returned; the running record; a multirun
with a failed job exits 1 after every job ran."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf, open_dict
from PIL import Image

from conftest import ROOT, make_cfg, read_result
from transferlab.data.fingerprint import changes
from transferlab.data.registry import data_fingerprint
from transferlab.errors import DataError
from transferlab.files import file_lock, read_json
from transferlab.identity import config_hash, with_absolute_paths
from transferlab.naming import MAX_NAME_BYTES, run_folder_name
from transferlab.record import RUN_LOCK, SUPERSEDED, is_completed
from transferlab.report.load import KILLED, scan
from transferlab.run import lifecycle
from transferlab.run.inputs import inputs_fingerprint
from transferlab.run.lifecycle import train
from transferlab.run.source import source_weights_path

#: a run of a few seconds on an image folder
TINY = ["dataset=folder", "backbone.name=test_resnet", "backbone.weights=null", "strategy=scratch", "trainer.max_epochs=1",
        "dataset.val_fraction=0.25", "dataset.test_fraction=0.25", "dataset.num_workers=0", "dataset.verify=false"]


def make_images(root: Path, classes: dict[str, int]) -> Path:
    """``root/<class>/<i>.png``: tiny images, a brightness per class."""
    for c, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = np.full((8, 8, 3), 30 + 50 * c + i, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1",
            "TRANSFERLAB_RUNS": str(tmp_path / "runs"), "TRANSFERLAB_CACHE": str(tmp_path / "cache")}


def _cli(tmp_path: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "transferlab.train", *args, "logger=none", "trainer.enable_progress_bar=false"],
                          env=_env(tmp_path), cwd=cwd, capture_output=True, text=True, timeout=400)


# ---- paths and folder names ----------------------------------------------------------------------------
def test_relative_paths_are_taken_against_the_launch_folder(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "dataset=folder", "dataset.root=imgs", "backbone.weights=w/x.pth")
    a, b = with_absolute_paths(cfg, "/launch/a"), with_absolute_paths(cfg, "/launch/b")
    assert (a.dataset.root, a.backbone.weights) == ("/launch/a/imgs", "/launch/a/w/x.pth")
    assert cfg.dataset.root == "imgs", "the caller's config is left as it was"
    assert config_hash(a, None) != config_hash(b, None)
    assert with_absolute_paths(make_cfg(tmp_path, "dataset=folder", "dataset.root=/data/imgs"), "/x").dataset.root == "/data/imgs"
    hub = with_absolute_paths(make_cfg(tmp_path, "dataset=manifest", "backbone.weights=hub"), "/x")
    assert hub.backbone.weights == "hub" and OmegaConf.is_missing(hub.dataset, "path"), "choices and unset values are not paths"


def test_run_folder_names_are_flat_short_and_otherwise_hydras() -> None:
    studies = ["strategy=finetune", "seed=0", "optimizer.lr=0.003", "dataset.per_class=4", "logger=wandb", "experiment=x"]
    # the names Hydra's override_dirname gave the committed studies' runs: their folders are found again
    assert run_folder_name(studies, "/w") == "dataset.per_class=4,optimizer.lr=0.003,seed=0,strategy=finetune"
    absolute = run_folder_name(["dataset=folder", "dataset.root=/tmp/a/imgs"], "/w")
    assert "/" not in absolute and absolute.startswith("dataset.root=imgs-") and absolute.endswith(",dataset=folder")
    assert run_folder_name(["dataset.root=imgs"], "/tmp/a") == run_folder_name(["dataset.root=/tmp/a/imgs"], "/w")
    assert run_folder_name(["dataset.root=imgs"], "/tmp/a") != run_folder_name(["dataset.root=imgs"], "/tmp/b")
    hub = run_folder_name(["backbone.name=hf-hub:timm/resnet18.a1_in1k", "backbone.weights=hub"], "/w")
    assert "/" not in hub and "backbone.weights=hub" in hub
    assert hub != run_folder_name(["backbone.name=hf-hub:timm_resnet18.a1_in1k", "backbone.weights=hub"], "/w")
    long = [run_folder_name([f"+x{i}=abcdefghij" for i in range(n)], "/w") for n in (40, 41)]
    assert all(len(name.encode()) <= MAX_NAME_BYTES for name in long) and long[0] != long[1]


# ---- fingerprints ----------------------------------------------------------------------------------------
def _folder_print(root: Path) -> dict:
    return data_fingerprint({"kind": "folder", "root": str(root)})


def test_folder_fingerprint_follows_files_and_classes_and_opens_no_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_images(tmp_path / "imgs", {"a": 3, "b": 3})
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("the fingerprint opened an image"))
    first = _folder_print(root)
    assert first == _folder_print(root) and sorted(first["classes"]) == ["a", "b"]
    (root / "notes.txt").write_text("not an image")  # ignored by the folder source, so by its fingerprint
    assert _folder_print(root) == first
    shutil.copy(root / "a" / "0.png", root / "a" / "9.png")
    assert changes(first, second := _folder_print(root)) == ["1 file(s) added in a"]
    shutil.copytree(root / "b", root / "c")
    assert changes(second, third := _folder_print(root)) == ["1 class(es) added: c (3 files)"]
    os.utime(root / "b" / "0.png", ns=(1, 1))
    assert changes(third, _folder_print(root)) == ["files replaced or modified (same count) in b"]
    shutil.rmtree(root / "a")
    assert "1 class(es) removed: a" in changes(third, _folder_print(root))


def test_manifest_fingerprint_covers_its_content_and_the_files_it_lists(tmp_path: Path) -> None:
    make_images(tmp_path / "images", {"a": 2, "b": 2})
    rows = [f"images/{c}/{i}.png,{c}" for c in "ab" for i in range(2)]
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    cfg = {"kind": "manifest", "path": str(manifest)}
    first = data_fingerprint(cfg)
    assert first["classes"]["a"]["files"] == 2 and first == data_fingerprint(cfg)
    os.utime(tmp_path / "images" / "a" / "1.png", ns=(5, 5))
    assert changes(first, second := data_fingerprint(cfg)) == ["files replaced or modified (same count) in a"]
    manifest.write_text("path,label\n" + "\n".join(rows + [rows[0]]) + "\n")  # a duplicated row
    third = data_fingerprint(cfg)
    assert third["content"] != second["content"] and "1 file(s) added in a" in changes(second, third)


def test_built_in_and_torchvision_sets_are_named_by_a_version(tmp_path: Path) -> None:
    prints = {kind: data_fingerprint({"kind": kind, "tv_name": "CIFAR10"}) for kind in ("digits", "glyphs", "torchvision")}
    assert prints["digits"]["version"].startswith("scikit-learn ")
    assert prints["torchvision"]["name"] == "CIFAR10" and prints["torchvision"]["version"].startswith("torchvision ")
    assert isinstance(prints["glyphs"]["version"], int)
    assert len({p["digest"] for p in prints.values()}) == 3 and not any("classes" in p for p in prints.values())
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"0" * 10)
    inputs = inputs_fingerprint(with_absolute_paths(make_cfg(tmp_path, f"backbone.weights={weights}"), tmp_path))
    assert sorted(inputs) == ["backbone.weights", "dataset", "digest"]
    weights.write_bytes(b"1" * 11)
    changed = inputs_fingerprint(with_absolute_paths(make_cfg(tmp_path, f"backbone.weights={weights}"), tmp_path))
    assert changed["digest"] != inputs["digest"] and changed["dataset"] == inputs["dataset"]
    source = inputs_fingerprint(make_cfg(tmp_path, "backbone.weights=source"))
    assert source["source.dataset"]["kind"] == "glyphs"


# ---- stale results ---------------------------------------------------------------------------------------
def test_same_command_relative_root_other_data_is_not_the_old_result(tmp_path: Path) -> None:
    """The issue's case: the same command with dataset.root=imgs, run from another folder whose imgs/ holds
    other classes, once printed "already completed" and returned the 3-class result."""
    a, b = tmp_path / "a", tmp_path / "b"
    make_images(a / "imgs", {"x": 6, "y": 6, "z": 6})
    make_images(b / "imgs", {"w": 6, "x": 6, "y": 6, "z": 6})
    command = [*TINY, "dataset.root=imgs"]
    first = _cli(tmp_path, a, *command)
    assert first.returncode == 0, first.stderr[-3000:]
    second = _cli(tmp_path, b, *command)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already completed" not in second.stdout + second.stderr
    runs = sorted((tmp_path / "runs" / "default" / "single").iterdir())
    assert len(runs) == 2, "one folder per data folder"
    records = {r["data_fingerprint"]["dataset"]["root"]: r for r in (read_result(d) for d in runs)}
    assert sorted(records) == [str(a / "imgs"), str(b / "imgs")]
    assert len(records[str(b / "imgs")]["data_fingerprint"]["dataset"]["classes"]) == 4
    assert records[str(a / "imgs")]["status"] == records[str(b / "imgs")]["status"] == "completed"
    # an absolute root gives a flat folder: the same one as the relative root naming the same folder
    again = _cli(tmp_path, a, *TINY, f"dataset.root={b / 'imgs'}")
    assert again.returncode == 0 and "already completed" in again.stdout + again.stderr
    assert sorted((tmp_path / "runs" / "default" / "single").iterdir()) == runs
    assert all("/" not in d.name and "dataset.root=imgs-" in d.name for d in runs)


def test_a_class_folder_added_runs_again_and_keeps_the_completed_result(tmp_path: Path) -> None:
    root, out = make_images(tmp_path / "imgs", {"x": 6, "y": 6, "z": 6}), tmp_path / "run"
    cfg = make_cfg(tmp_path, *TINY, f"dataset.root={root}")
    train(cfg, out)
    old = (out / "result.json").read_bytes()
    make_images(root, {"v": 6})  # a class folder added
    train(cfg, out)
    record = read_result(out)
    assert record["status"] == "completed" and len(record["data_fingerprint"]["dataset"]["classes"]) == 4
    assert record["replaces"]["changes"] == [f"dataset (folder {root}): 1 class(es) added: v (6 files)"]
    kept = out / SUPERSEDED / json.loads(old)["config_hash"]
    assert Path(record["replaces"]["kept_in"]) == kept and (kept / "result.json").read_bytes() == old
    assert [e.path for e in scan([out]).entries] == [str(out / "result.json")], "the report skips superseded runs"
    assert train(cfg, out) == record["metrics"] and read_result(out) == record  # unchanged now: skipped


def test_a_record_without_a_data_fingerprint_is_not_reused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = make_cfg(tmp_path, "backbone.name=test_resnet", "backbone.weights=null", "strategy=scratch", "dataset.per_class=2")
    train(cfg, out)
    legacy = read_result(out)  # as an earlier transferlab wrote it: no fingerprint, the hash of the config alone
    legacy.pop("data_fingerprint")
    legacy["config_hash"] = config_hash(with_absolute_paths(cfg, Path.cwd()), None)
    (out / "result.json").write_text(json.dumps(legacy))
    train(cfg, out)
    assert "recorded no fingerprint of its data" in read_result(out)["replaces"]["changes"][0]


def test_missing_data_fails_early_and_never_replaces_a_completed_result(tmp_path: Path) -> None:
    root, out = make_images(tmp_path / "imgs", {"x": 6, "y": 6}), tmp_path / "run"
    cfg = make_cfg(tmp_path, *TINY, f"dataset.root={root}")
    train(cfg, out)
    done = (out / "result.json").read_bytes()
    shutil.rmtree(root)
    with pytest.raises(DataError, match="does not exist"):
        train(cfg, out)
    assert (out / "result.json").read_bytes() == done
    with pytest.raises(DataError, match="does not exist"):
        train(cfg, tmp_path / "fresh")
    assert read_result(tmp_path / "fresh")["status"] == "failed"


# ---- the record a run writes when it starts -----------------------------------------------------------------
def test_a_run_writes_its_running_record_when_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, seen = tmp_path / "run", {}

    def stop_at_start(cfg, out_dir, record):  # noqa: ANN001, ANN202 - stands in for the training
        seen["record"] = read_json(out_dir / "result.json")
        seen["completed"] = is_completed(out_dir, record.config_hash)
        seen["note"] = scan([out_dir]).problems()[0]["error"]
        raise RuntimeError("stopped")

    monkeypatch.setattr(lifecycle, "_assemble_and_run", stop_at_start)
    with pytest.raises(RuntimeError, match="stopped"):
        train(make_cfg(tmp_path, "backbone.name=test_resnet", "backbone.weights=null", "strategy=scratch"), out)
    record = seen["record"]
    assert record["status"] == "running" and record["strategy"] == "scratch" and record["seed"] == 0
    assert record["config_hash"] and record["data_fingerprint"]["dataset"]["kind"] == "digits"
    assert seen["completed"] is None, "a running record is never a completed run"
    assert seen["note"].startswith("still running")  # its process holds the lock
    assert read_result(out)["status"] == "failed"


def test_the_report_tells_a_killed_run_from_a_running_one(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "result.json").write_text(json.dumps({"status": "running", "strategy": "scratch", "fraction": 0.1}))
    (out / RUN_LOCK).touch()
    found = scan([out])
    assert found.problem_counts()["pending"] == 1 and found.problems()[0]["error"] == KILLED
    with file_lock(out / RUN_LOCK):
        assert scan([out]).problems()[0]["error"].startswith("still running")


# ---- a multirun with a failed job -----------------------------------------------------------------------------
@pytest.mark.parametrize("launcher", [
    pytest.param([], id="basic", marks=pytest.mark.slow),  # 8 s; CI's time, as submitit_local below
    pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], id="joblib"),
    pytest.param(["hydra/launcher=local", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"], id="submitit_local",
                 marks=pytest.mark.slow),  # 17 s; CI's time: the failure notes are files, the same for every launcher
])
def test_a_multirun_with_a_failed_job_exits_1_after_every_job_ran(tmp_path: Path, launcher: list[str]) -> None:
    proc = _cli(tmp_path, tmp_path, "-m", *launcher, "backbone.name=test_resnet", "backbone.weights=null", "strategy=scratch",
                "trainer.max_epochs=1", "dataset.fraction=7,0.05")  # the first job fails, the second runs
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    sweep = tmp_path / "runs" / "default" / "multirun"
    good = read_result(next(sweep.glob("*dataset.fraction=0.05*")))
    assert good["status"] == "completed", "the job after the failed one ran"
    listing = proc.stderr[proc.stderr.index("1 job(s) of this multirun failed"):]
    assert "dataset.fraction=7," in listing and "dataset.fraction=7 must be in (0, 1]" in listing
    assert "Traceback" not in proc.stderr and not (sweep / ".failed_jobs").exists()


def test_the_source_weights_key_follows_the_source_data(tmp_path: Path) -> None:
    """A folder source task whose files changed trains (and caches) another source model, never the old one."""
    root = make_images(tmp_path / "src_imgs", {"a": 3, "b": 3})

    def weights_path() -> Path:
        cfg = make_cfg(tmp_path, "backbone.weights=source")
        with open_dict(cfg):
            cfg.source.dataset = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "dataset" / "folder.yaml"), {"root": str(root)})
        return source_weights_path(cfg, tmp_path / "cache")

    before = weights_path()
    assert before == weights_path()
    shutil.copytree(root / "b", root / "c")
    assert weights_path() != before
