"""The wheel, as a researcher installs it: built from the checkout, installed (not editable) into a fresh
environment, and run from an empty folder with the researcher's own dataset and experiment configs beside
transferlab's (``--config-dir``), the way docs/your-project.md shows.

Installing torch & co. again would take minutes and gigabytes, so the fresh environment sees the project
environment's third-party packages through a ``.pth`` line, and the wheel goes in with ``--no-deps``. The
project environment holds transferlab *editable* (a ``.pth`` to ``src/``); ``.pth`` files inside a folder that
a ``.pth`` line adds are not run, so the checkout's ``src/`` is not on the path, and the test checks that the
code and the configs that ran are the wheel's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from conftest import ROOT

#: what the build reads from the checkout (copied first: building writes build/ and *.egg-info beside the sources)
BUILD_INPUTS = ["src", "conf", "experiments", "sweeps", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md"]

USER_DATASET = """\
# my own images: transferlab's folder dataset (every key is documented there), with my root and name
defaults:
  - folder
  - _self_
name: shapes
root: {root}
input_size: 16
num_workers: 0
"""

USER_EXPERIMENT = """\
# @package _global_
# my study: my images, a tiny backbone (random init, no download), a one-epoch budget
defaults:
  - override /dataset: shapes
experiment_name: my_study
backbone:
  name: test_resnet
  weights: null
trainer:
  max_epochs: 1
"""


def _build_wheel(tmp_path: Path) -> Path:
    tree = tmp_path / "checkout"
    for name in BUILD_INPUTS:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.png", "*.csv"))
        else:
            shutil.copy2(source, tree / name)
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(tree)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("transferlab-*.whl")
    return wheel


def _fresh_env(tmp_path: Path, wheel: Path) -> tuple[Path, Path]:
    """A new virtual environment that sees the project's third-party packages, with the wheel installed."""
    env = tmp_path / "fresh"
    venv.create(env, with_pip=False, symlinks=True)
    site = Path(subprocess.run([str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "project_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                                "--ignore-installed", str(wheel)], capture_output=True, text=True, timeout=300, env=_clean_env())
    assert installed.returncode == 0, installed.stderr[-3000:]
    return env, site


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TRANSFERLAB_", "VIRTUAL_ENV"))}
    return {**env, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1", **extra}


def _user_project(tmp_path: Path) -> Path:
    """my_project/: configs/dataset/shapes.yaml, configs/experiment/my_study.yaml and images/<class>/<i>.png."""
    project = tmp_path / "my_project"
    for c, name in enumerate(["circle", "square"]):
        (project / "images" / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.full((8, 8, 3), 40 + 120 * c + i, dtype=np.uint8)).save(project / "images" / name / f"{i}.png")
    (project / "configs" / "dataset").mkdir(parents=True)
    (project / "configs" / "experiment").mkdir(parents=True)
    (project / "configs" / "dataset" / "shapes.yaml").write_text(USER_DATASET.format(root=project / "images"))
    (project / "configs" / "experiment" / "my_study.yaml").write_text(USER_EXPERIMENT)
    return project


def test_the_wheel_carries_the_configs_and_runs_a_users_own_dataset_from_an_empty_folder(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("transferlab/conf/config.yaml", "transferlab/conf/dataset/folder.yaml", "transferlab/conf/hydra/help/transferlab.yaml",
                    "transferlab/experiments/digits_transfer.yaml", "transferlab/sweeps/fair_x_fraction.yaml",
                    "hydra_plugins/transferlab_studies/studies.py"):
        assert shipped in names, shipped
    assert not [n for n in names if "wandb/" in n or n.endswith((".png", ".md"))], "only the configs travel, not W&B sweeps or reports"

    env, site = _fresh_env(tmp_path, wheel)
    probe = ("import transferlab, hydra_plugins.transferlab_studies.studies as s; from hydra import compose, initialize_config_dir\n"
             "from transferlab.config.location import config_dir\n"
             "with initialize_config_dir(version_base='1.3', config_dir=str(config_dir())):\n"
             "    cfg = compose('config', overrides=['experiment=digits_transfer', 'sweep=fair_x_fraction'])\n"
             "print(transferlab.__file__, s.__file__, config_dir(), cfg.experiment_name, cfg.sweep_name, sep='\\n')")
    shown = subprocess.run([str(env / "bin" / "python"), "-c", probe], cwd=tmp_path, env=_clean_env(),
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    package, plugin, conf, experiment, sweep = shown.stdout.split()
    assert Path(package).is_relative_to(site) and Path(plugin).is_relative_to(site), "the wheel's code, not the checkout's"
    assert Path(conf) == site / "transferlab" / "conf" and (experiment, sweep) == ("digits_transfer", "fair_x_fraction")

    project = _user_project(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    ran = subprocess.run([str(env / "bin" / "transferlab-train"), "--config-dir", str(project / "configs"), "experiment=my_study",
                          "strategy=scratch", "logger=none", "trainer.enable_progress_bar=false"],
                         cwd=empty, env=_clean_env(), capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    (line,) = [line for line in ran.stdout.splitlines() if line.startswith("transferlab: result: ")]
    result = Path(line.removeprefix("transferlab: result: "))
    assert result.is_relative_to(empty / "runs" / "my_study" / "single") and result.name == "result.json"
    record = json.loads(result.read_text())
    assert record["status"] == "completed" and record["dataset"] == "shapes" and record["strategy"] == "scratch"
    hydra = yaml.safe_load((result.parent / ".hydra" / "hydra.yaml").read_text())["hydra"]
    sources = {s["provider"]: (s["schema"], s["path"]) for s in hydra["runtime"]["config_sources"]}
    assert sources["main"] == ("file", str(site / "transferlab" / "conf")), sources  # the wheel's conf/
    assert sources["transferlab"] == ("transferlab", str(site / "transferlab")), sources  # its studies and sweeps
    assert sources["command-line"] == ("file", str(project / "configs")), sources  # the user's folder
    assert str(ROOT) not in json.dumps(sources), "no config came from the checkout"
    assert hydra["runtime"]["choices"]["dataset"] == "shapes" and hydra["runtime"]["choices"]["experiment"] == "my_study"
