"""Sweeps end to end: Hydra multiruns with W&B offline runs, the submitit launcher, killed sweeps that
resume, the Optuna sweep, W&B sweep YAMLs as the agent renders them, and W&B failing without losing a run.

The multiruns are subprocesses of ``python -m transferlab.train`` with this checkout on PYTHONPATH, a
tiny timm test backbone, random init and one or a few epochs.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CONF, ROOT, make_cfg
from wandb_records import read_run

TINY = ["backbone.name=test_resnet", "backbone.weights=null", "trainer.enable_progress_bar=false"]


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    """As OMP_NUM_THREADS=1 in the subprocesses: on a few busy cores, torch's thread pool mostly waits."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp_path / "wandb_dir"),
        "TRANSFERLAB_RUNS": str(tmp_path / "runs"),
        "TRANSFERLAB_CACHE": str(tmp_path / "cache"),
        "PL_DISABLE_FORK": "1",
        "OMP_NUM_THREADS": "1",  # one torch thread per process: far faster on 2 shared cores than 2 threads fighting
    }
    env.pop("WANDB_RUN_ID", None)
    env.pop("WANDB_SWEEP_ID", None)
    (tmp_path / "wandb_dir").mkdir(exist_ok=True)
    env.update(extra)
    return env


def _train_cli(tmp_path: Path, *args: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "transferlab.train", *args],
        env=_env(tmp_path, **env), cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _status(folder: Path) -> str | None:
    """The status in the run's result.json (None while there is none)."""
    try:
        return json.loads((folder / "result.json").read_text())["status"]
    except (OSError, ValueError):
        return None


def _results(folder: Path) -> dict[str, dict[str, Any]]:
    """Job folder name → its result.json."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/result.json"))}


# ---------------------------------------------------------------------------------------------- grid + W&B


def test_strategy_x_fraction_multirun_one_result_and_one_wandb_run_per_job(tmp_path: Path) -> None:
    proc = _train_cli(
        tmp_path, "-m", "experiment=digits_transfer", "sweep=strategy_x_fraction",
        "strategy=scratch,linear_probe", "dataset.fraction=0.1", "seed=0,1",
        *TINY, "trainer.max_epochs=1", "logger=wandb",
    )
    sweep_dir = tmp_path / "runs" / "digits_transfer" / "strategy_x_fraction"
    assert "multirun of 4 jobs" in proc.stdout
    results = _results(sweep_dir)
    assert len(results) == 4, list(sweep_dir.iterdir())
    assert {(r["strategy"], r["seed"]) for r in results.values()} == {
        (s, seed) for s in ("scratch", "linear_probe") for seed in (0, 1)
    }
    ids = set()
    for folder, record in results.items():
        assert record["status"] == "completed"
        assert record["sweep"] == "strategy_x_fraction" and record["experiment"] == "digits_transfer"
        assert record["fraction"] == 0.1 and record["backbone"] == "test_resnet"
        info = record["wandb"]
        assert info["mode"] == "offline" and Path(info["dir"]).is_dir()
        assert Path(info["dir"]).is_relative_to(sweep_dir / folder)  # the run's own folder, not a shared one
        ids.add(info["id"])

        run = read_run(Path(info["dir"]))  # the offline run itself, as its records say
        assert run.id == info["id"]
        assert run.group == "digits_transfer/strategy_x_fraction"
        assert run.job_type == record["strategy"]
        # strategy, size and seed by name; the command line's other settings (backbone, epochs) by a digest
        assert run.name.startswith(f"{record['strategy']}-f0.1-s{record['seed']}-")
        assert run.tags == [f"strategy:{record['strategy']}", "fraction:0.1", f"seed:{record['seed']}", "weights:none",
                            "backbone:test_resnet", "dataset:digits", "name:test_resnet", "max_epochs:1"]
        assert run.summary["n_train"] == record["n_train"] and run.summary["steps"] == record["steps"]
        assert run.project == "transferlab"
        # the resolved Hydra config is the run config; Lightning's module hparams do not overwrite its groups
        assert run.config["experiment_name"] == "digits_transfer" and run.config["sweep_name"] == "strategy_x_fraction"
        assert run.config["strategy"]["name"] == record["strategy"]
        assert run.config["seed"] == record["seed"]
        assert run.config["dataset"]["fraction"] == 0.1
        assert run.config["backbone"]["name"] == "test_resnet"
        assert run.config["optimizer"]["name"] == "adamw"
        assert run.config["module"]["backbone"]["name"] == "test_resnet"  # the typed groups, as plain dicts
        # final metrics and the record's path in the summary; the run was finished, and cleanly
        for key in ("test/acc", "test/f1_macro", "val/acc_best"):
            assert run.summary[key] == pytest.approx(record["metrics"][key])
        assert run.summary["result_json"] == str(sweep_dir / folder / "result.json")
        assert run.exit_code == 0
        assert len(list((sweep_dir / folder / "wandb").glob("offline-run-*"))) == 1
    assert len(ids) == 4  # four jobs in one process: four W&B runs, none merged
    assert len({read_run(Path(r["wandb"]["dir"])).name for r in results.values()}) == 4


# ------------------------------------------------------------------------------------------ submitit local


@pytest.mark.slow  # 17 s, for CI's 15 minutes: submitit runs in CI under the real SLURM (make test-slurm)
def test_submitit_local_launcher_runs_two_jobs(tmp_path: Path) -> None:
    proc = _train_cli(
        tmp_path, "-m", "hydra/launcher=local", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
        "strategy=scratch,linear_probe", "dataset.fraction=0.05", *TINY, "trainer.max_epochs=1", "logger=none",
    )
    sweep_dir = tmp_path / "runs" / "default" / "multirun"
    assert "Submitit 'local' sweep output dir" in proc.stdout + proc.stderr
    results = _results(sweep_dir)
    assert sorted(r["strategy"] for r in results.values()) == ["linear_probe", "scratch"]
    assert all(r["status"] == "completed" for r in results.values())
    # each job ran in its own submitit process and handed its value back to Hydra
    returned = {}
    for pkl in sorted(sweep_dir.glob(".submitit/*/*_result.pkl")):
        outcome, job_return = pickle.loads(pkl.read_bytes())
        assert outcome == "success", job_return
        returned[Path(job_return.hydra_cfg.hydra.runtime.output_dir).name] = job_return.return_value
    assert returned == {name: pytest.approx(r["metrics"]["val/acc_best"]) for name, r in results.items()}
    job_ids = {p.name for p in sweep_dir.glob(".submitit/*") if list(p.glob("*_result.pkl"))}
    assert len(job_ids) == 2


# ------------------------------------------------------------------------------------- killed, then resumed


def test_killed_multirun_resumes_and_runs_every_job_exactly_once(tmp_path: Path) -> None:
    args = ["-m", "experiment=digits_transfer", "sweep=strategy_x_fraction", "strategy=scratch",
            "dataset.fraction=0.05", "seed=0,1,2", *TINY, "trainer.max_epochs=3", "min_train_steps=0", "checkpoint_every_s=0", "logger=none"]
    sweep_dir = tmp_path / "runs" / "digits_transfer" / "strategy_x_fraction"
    job = {s: sweep_dir / f"backbone.name=test_resnet,backbone.weights=null,dataset.fraction=0.05,min_train_steps=0,"
                          f"seed={s},strategy=scratch,trainer.max_epochs=3" for s in (0, 1, 2)}
    with open(tmp_path / "first.log", "w") as log_file:
        first = subprocess.Popen([sys.executable, "-m", "transferlab.train", *args], env=_env(tmp_path), cwd=tmp_path,
                                 stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            # the first job done, the second one midway: it has saved a checkpoint, its record says running
            while not (_status(job[0]) == "completed" and (job[1] / "checkpoints" / "last.ckpt").exists()):
                assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the multirun did not get to its second job"
                time.sleep(0.05)
            assert _status(job[1]) == "running", "second job finished before it could be killed"
            os.killpg(first.pid, signal.SIGKILL)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert json.loads((job[0] / "result.json").read_text())["status"] == "completed"
    assert _status(job[1]) == "running" and not (job[2] / "result.json").exists()
    before = (job[0] / "result.json").read_bytes(), (job[0] / "result.json").stat().st_mtime_ns

    again = _train_cli(tmp_path, *args)
    records = {s: json.loads((job[s] / "result.json").read_text()) for s in job}
    assert all(r["status"] == "completed" for r in records.values())
    assert len({r["config_hash"] for r in records.values()}) == 3
    # job 1 was not run again: its record is the same file, untouched
    assert ((job[0] / "result.json").read_bytes(), (job[0] / "result.json").stat().st_mtime_ns) == before
    assert again.stdout.count("already completed") == 1
    # job 2 went on from its last checkpoint to the end; job 3 ran from the start
    assert records[1]["resumed_from"] == str(job[1] / "checkpoints" / "last.ckpt")
    assert f"Restoring states from the checkpoint path at {job[1]}/checkpoints/last.ckpt" in again.stdout + again.stderr
    assert records[1]["epochs"] == 3
    assert records[2]["resumed_from"] is None and records[2]["epochs"] == 3
    assert not any((job[s] / "checkpoints").exists() for s in job)  # removed once completed
    assert "multirun of 3 jobs" in again.stdout and again.stdout.count("done (") == 3


# ----------------------------------------------------------------------------------------------- Optuna


def test_optuna_sweep_gets_the_monitored_metric(tmp_path: Path) -> None:
    _train_cli(
        tmp_path, "-m", "experiment=digits_transfer", "sweep=optuna_lr", "hydra.sweeper.n_trials=3",
        "dataset.fraction=0.3", *TINY, "trainer.max_epochs=2", "logger=none",
    )
    sweep_dir = tmp_path / "runs" / "digits_transfer" / "optuna_lr"
    results = _results(sweep_dir)
    assert len(results) == 3 and all(r["status"] == "completed" and r["strategy"] == "finetune" for r in results.values())
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    values = {name: r["metrics"]["val/acc_best"] for name, r in results.items()}
    assert best["best_value"] == pytest.approx(max(values.values()))
    assert max(values.values()) > min(values.values()), f"trials must differ for this check to mean anything: {values}"
    best_folder = max(values, key=values.__getitem__)
    for key, value in best["best_params"].items():  # the best trial's parameters name the best folder
        assert f"{key}={value}" in best_folder
    assert set(best["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "strategy.backbone_lr_scale"}


# ---------------------------------------------------------------------------------------- W&B sweep YAMLs

WANDB_SWEEPS = sorted((ROOT / "sweeps" / "wandb").glob("*.yaml"))


def _candidates(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Parameter sets an agent can propose, together covering every listed value and both ends of every
    distribution (each value is one override, so covering them all needs no full product)."""
    options = []
    for spec in parameters.values():
        if "value" in spec:
            options.append([spec["value"]])
        elif "values" in spec:
            options.append(list(spec["values"]))
        else:
            options.append([spec["min"], spec["max"]])
    n = max(len(o) for o in options)
    return [{k: o[i % len(o)] for k, o in zip(parameters, options)} for i in range(n)]


def _agent_command(sweep: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The command line ``wandb agent`` runs for ``params``: wandb's own helpers, the agent's substitution."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = sweep_utils.create_sweep_command(list(sweep["command"]))
    sweep_vars = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    sweep_vars.update(interpreter=["python"], program=[sweep["program"]], env=["/usr/bin/env"])  # as Agent._command_run
    rendered: list[str] = []
    for chunk in map(str, command):
        if chunk.startswith("${") and chunk.endswith("}"):
            rendered += sweep_vars.get(chunk[2:-1]) or []
        else:
            rendered.append(chunk)
    return rendered


def _split_program(rendered: list[str]) -> list[str]:
    """The Hydra overrides of a rendered command, after checking it starts transferlab-train."""
    assert rendered[0] == "/usr/bin/env"
    if rendered[1] == "transferlab-train":
        return rendered[2:]
    assert rendered[1:4] == ["python", "-m", "transferlab.train"], rendered
    return rendered[4:]


@pytest.mark.parametrize("path", WANDB_SWEEPS, ids=lambda p: p.stem)
def test_wandb_sweep_yaml_renders_valid_transferlab_train_commands(path: Path) -> None:
    sweep = yaml.safe_load(path.read_text())
    assert sweep["program"] == "transferlab-train"
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'transferlab-train = "transferlab.train:main"' in scripts
    assert sweep["method"] in ("grid", "random", "bayes")
    assert sweep["metric"] == {"name": "val/acc_best", "goal": "maximize"}
    assert "${args_no_hyphens}" in sweep["command"]
    candidates = _candidates(sweep["parameters"])
    assert len(candidates) >= 2
    parser = OverridesParser.create()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        for params in candidates:
            overrides = _split_program(_agent_command(sweep, params))
            parsed = parser.parse_overrides(overrides)
            assert not any(o.is_sweep_override() for o in parsed), overrides  # one run per agent command
            cfg = compose("config", overrides=overrides)
            assert cfg.optimized_metric == sweep["metric"]["name"]
            assert cfg.logger.name == "wandb"
            assert cfg.experiment_name == params["experiment"] and cfg.sweep_name == params["sweep_name"]
            for key, value in params.items():
                if key not in ("experiment", "logger", "strategy"):
                    node: Any = cfg
                    for part in key.split("."):
                        node = node[part]
                    assert node == pytest.approx(value) if isinstance(value, float) else node == value, key
            assert cfg.strategy.name == params["strategy"]


def test_wandb_agent_command_runs_for_real(tmp_path: Path) -> None:
    """One rendered agent command (console script on PATH, as the agent runs it), tiny settings appended."""
    path = ROOT / "sweeps" / "wandb" / "lr_search.yaml"
    sweep = yaml.safe_load(path.read_text())
    params = _candidates(sweep["parameters"])[0]
    rendered = _agent_command(sweep, params)
    if not (Path(sys.executable).parent / "transferlab-train").exists():
        pytest.skip("the transferlab-train console script is not installed next to this Python")
    tiny = [*TINY, "trainer.max_epochs=1"]
    assert not {o.split("=")[0] for o in tiny} & set(params)  # appended overrides never fight the sweep's
    proc = subprocess.run([*rendered, *tiny], env=_env(tmp_path, WANDB_RUN_ID="agentrun1"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sweep_dir = tmp_path / "runs" / "digits_transfer" / "wandb_lr_search"
    (record,) = _results(sweep_dir).values()
    assert record["status"] == "completed" and record["strategy"] == "finetune"
    assert record["wandb"]["id"] == "agentrun1"  # the agent's run id, so W&B files the run under the sweep
    run = read_run(Path(record["wandb"]["dir"]))
    assert run.group == "digits_transfer/wandb_lr_search" and run.job_type == "finetune"
    assert run.config["optimizer"]["lr"] == pytest.approx(params["optimizer.lr"])
    assert run.summary["val/acc_best"] == pytest.approx(record["metrics"]["val/acc_best"])


# --------------------------------------------------------------------------------------- config choices


def _hydra_cfg(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_sweep_definitions_and_launcher_presets_compose() -> None:
    from transferlab.progress import grid_size

    grids = {"strategy_x_fraction": (3, 45), "all_strategies_x_fraction": (5, 75)}
    for name, (n_strategies, n_jobs) in grids.items():
        cfg = _hydra_cfg("experiment=digits_transfer", f"sweep={name}")
        assert cfg.sweep_name == name
        assert len(str(cfg.hydra.sweeper.params.strategy).split(",")) == n_strategies
        assert grid_size(cfg) == n_jobs
    optuna = _hydra_cfg("experiment=digits_transfer", "sweep=optuna_lr")
    assert optuna.hydra.sweeper._target_.endswith("OptunaSweeper") and optuna.hydra.sweeper.direction == "maximize"
    assert set(optuna.hydra.sweeper.params) == {"optimizer.lr", "optimizer.weight_decay", "strategy.backbone_lr_scale"}
    assert str(optuna.hydra.sweeper.params["optimizer.lr"]).startswith("tag(log")
    assert optuna.optimized_metric == "val/acc_best" and optuna.strategy.name == "finetune"

    slurm = _hydra_cfg("hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4", "+trainer.num_nodes=2",
                       "+trainer.strategy=ddp")
    launcher = slurm.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    from hydra_plugins.transferlab_slurm.launcher import derived_resources

    resources = derived_resources(dict(launcher), slurm.trainer)  # "auto" follows the trainer, at launch
    assert resources["tasks_per_node"] == 4 == resources["gpus_per_node"]  # Lightning's SLURMEnvironment: tasks = devices
    assert resources["nodes"] == 2
    assert {"partition", "timeout_min", "cpus_per_task", "mem_gb", "array_parallelism"} <= set(launcher)
    local = _hydra_cfg("hydra/launcher=local").hydra.launcher
    assert local._target_.endswith("LocalLauncher") and local.gpus_per_node == 0
    joblib = _hydra_cfg("hydra/launcher=joblib", "hydra.launcher.n_jobs=2").hydra.launcher
    assert joblib._target_.endswith("JoblibLauncher") and joblib.n_jobs == 2


# ------------------------------------------------------------------------------- W&B never loses a run


def _wandb_cfg(tmp_path: Path, *overrides: str):
    return make_cfg(tmp_path, *TINY, "strategy=scratch", "dataset.fraction=0.05", "logger=wandb", *overrides)


def test_wandb_falls_back_to_offline_then_to_no_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    import wandb

    from transferlab import tracking
    from transferlab.run.lifecycle import train

    monkeypatch.setattr(tracking, "wandb_mode", lambda requested: "online")  # as if a key and network were there
    real_init = wandb.init
    calls: list[str] = []

    def online_fails(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("mode"))
        if kwargs.get("mode") == "online":
            raise RuntimeError("simulated: api.wandb.ai unreachable")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", online_fails)
    with caplog.at_level(logging.WARNING):
        train(_wandb_cfg(tmp_path, "seed=0"), tmp_path / "a")
    record = json.loads((tmp_path / "a" / "result.json").read_text())
    assert calls == ["online", "offline"]
    assert record["status"] == "completed" and record["wandb"]["mode"] == "offline"
    assert read_run(Path(record["wandb"]["dir"])).exit_code == 0
    assert "logging offline instead" in caplog.text and "wandb sync" in caplog.text

    def always_fails(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated: cannot write the W&B folder")

    monkeypatch.setattr(wandb, "init", always_fails)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        metrics = train(_wandb_cfg(tmp_path, "seed=1"), tmp_path / "b")
    record = json.loads((tmp_path / "b" / "result.json").read_text())
    assert record["status"] == "completed" and record["wandb"] is None
    assert record["metrics"]["test/acc"] == metrics["test/acc"]
    assert "continues without W&B" in caplog.text


def test_failed_job_finishes_its_wandb_run_and_the_next_job_gets_its_own(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import pytorch_lightning as pl
    import wandb

    from transferlab.run.lifecycle import train

    monkeypatch.setenv("TRANSFERLAB_TEST_TOKEN", "tok-0123456789abcdef")
    real_fit = pl.Trainer.fit

    def crash(self: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated crash mid-run")

    monkeypatch.setattr(pl.Trainer, "fit", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_wandb_cfg(tmp_path, "seed=0"), tmp_path / "failed")
    assert wandb.run is None  # not left active for the next job of the multirun
    failed = json.loads((tmp_path / "failed" / "result.json").read_text())
    assert failed["status"] == "failed" and failed["wandb"]["mode"] == "offline"

    monkeypatch.setattr(pl.Trainer, "fit", real_fit)
    train(_wandb_cfg(tmp_path, "seed=1", "+extra.api_key=tok-0123456789abcdef"), tmp_path / "next")
    done = json.loads((tmp_path / "next" / "result.json").read_text())
    assert done["wandb"]["id"] != failed["wandb"]["id"]
    first, second = read_run(Path(failed["wandb"]["dir"])), read_run(Path(done["wandb"]["dir"]))
    assert first.exit_code == 1 and "test/acc" not in first.summary
    assert second.exit_code == 0 and second.config["seed"] == 1 and "test/acc" in second.summary
    assert second.config["extra"]["api_key"] == "***"  # secrets never reach the run config
    assert "tok-0123456789abcdef" not in (tmp_path / "next" / "result.json").read_text()
