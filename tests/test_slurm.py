"""The SLURM launcher against a real SLURM on this machine (``scripts/slurm-local start``; marked ``slurm``,
run by ``.ci/run`` / ``make test-slurm``): a slice of the study as a job array equals the same runs made
locally; a job requeued mid-run and then preempted resumes to the uninterrupted run's numbers; a job with a 1-minute time limit
and about 2 minutes of training is requeued at its time limit and completes under one W&B run id; an unknown
partition fails before anything is submitted. Without root or apt the SLURM tests skip and say why.

The launcher's other checks (no sbatch on PATH, a non-integer ``trainer.devices``, the resources derived
from the trainer) need no SLURM and run with the rest of the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from test_sweeps import TINY, _env, _hydra_cfg, _results, _train_cli
from transferlab.run.checkpoints import load_checkpoint_safely  # imported now, not while a job runs (seconds)

SCRIPT = ROOT / "scripts" / "slurm-local"
#: one CPU and 1 GB per array task: two tasks side by side on a 2-core node
SMALL = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def _node_states() -> list[str] | None:
    """The nodes' states as ``sinfo`` gives them, or None when no SLURM controller answers."""
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.split() if proc.returncode == 0 else None


def _wait_for_a_node(timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(s.startswith(("idle", "mixed", "alloc", "compl")) for s in _node_states() or []):
        assert time.monotonic() < deadline, f"no usable SLURM node: sinfo says {_node_states()}"
        time.sleep(0.5)


@pytest.fixture(scope="session")
def slurm() -> Iterator[None]:
    """A running SLURM: this machine's, or one that ``scripts/slurm-local start`` installs and starts (and
    ``stop`` stops after the session)."""
    if _node_states() is not None:  # a controller answers: use it as it is, leave it running
        _wait_for_a_node()
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("no SLURM running, and starting one here needs root (scripts/slurm-local start: apt-get, daemons)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("no SLURM running, and no apt-get to install one (scripts/slurm-local installs Debian's slurm-wlm)")
    started = time.monotonic()
    proc = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _wait_for_a_node()
    subprocess.run(["scancel", "--user", str(os.getuid())], capture_output=True, timeout=30)  # jobs of an earlier session
    print(f"\nscripts/slurm-local start: {time.monotonic() - started:.1f} s")
    yield
    subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=60)


def _squeue() -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, check=True).stdout.split("\n")


def _cancel_jobs(sweep_dir: Path) -> None:
    """Cancel the SLURM jobs of this sweep (by the job folders submitit made): a test that failed leaves none
    running, and no sweep process waits for them (without accounting submitit cannot see a cancelled job end)."""
    ids = [d.name for d in (sweep_dir / ".submitit").glob("*") if d.name.isdigit()]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def _watch(folder: Path, proc: subprocess.Popen[str], timeout_s: float, until: Any, seen: list[str] | None = None) -> list[str]:
    """The record's statuses as they changed (appended to ``seen``), polled until ``until(statuses)`` or the
    sweep process ends."""
    from conftest import read_result

    seen = [] if seen is None else seen
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not until(seen):
        record = read_result(folder) if folder.is_dir() else None
        status = record.get("status") if record else None
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        if proc.poll() is not None and status in (None, "completed", "failed"):
            break
        time.sleep(0.2)
    return seen


def _only_run_dir(sweep_dir: Path, timeout_s: float = 120) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dirs = [d for d in sweep_dir.glob("*") if d.is_dir() and not d.name.startswith(".")]
        if dirs:
            return dirs[0]
        time.sleep(0.2)
    raise AssertionError(f"no run folder appeared in {sweep_dir}")


# ------------------------------------------------------------------------------------------ no SLURM needed


def test_plugins_are_found_in_the_hydra_plugins_namespace() -> None:
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    from hydra.plugins.sweeper import Sweeper

    found = {f"{c.__module__}.{c.__name__}" for kind in (Launcher, Sweeper) for c in Plugins.instance().discover(kind)}
    assert "hydra_plugins.transferlab_slurm.launcher.TransferlabSlurmLauncher" in found
    assert "hydra_plugins.transferlab_optuna.sweeper.SharedOptunaSweeper" in found
    assert not (ROOT / "src" / "hydra_plugins" / "__init__.py").exists()  # a namespace shared with other plugins


def test_resources_follow_the_trainer() -> None:
    from hydra_plugins.transferlab_slurm.launcher import derived_resources

    params = {"gpus_per_node": "auto", "tasks_per_node": "auto", "nodes": "auto", "cpus_per_task": 2}
    cpu = derived_resources(params, _hydra_cfg("hydra/launcher=slurm").trainer)
    assert (cpu["gpus_per_node"], cpu["tasks_per_node"], cpu["nodes"]) == (None, 1, 1)  # no GPU request on CPU
    gpu = derived_resources(params, _hydra_cfg("trainer=gpu", "trainer.devices=4", "+trainer.num_nodes=2").trainer)
    assert (gpu["gpus_per_node"], gpu["tasks_per_node"], gpu["nodes"]) == (4, 4, 2)
    fixed = derived_resources({**params, "gpus_per_node": 2}, _hydra_cfg("trainer=cpu").trainer)
    assert fixed["gpus_per_node"] == 2  # a number given is kept


def _launch(capsys: pytest.CaptureFixture[str], *overrides: str) -> str:
    """Hand one job to the launcher as Hydra would (in this process); it must refuse: its stderr."""
    from omegaconf import OmegaConf

    from hydra_plugins.transferlab_slurm.launcher import TransferlabSlurmLauncher

    cfg = _hydra_cfg("hydra/launcher=slurm", *overrides)
    params = {k: v for k, v in OmegaConf.to_container(cfg.hydra.launcher, resolve=True).items() if k != "_target_"}
    launcher = TransferlabSlurmLauncher(**params)
    launcher.config = cfg
    with pytest.raises(SystemExit) as stopped:
        launcher.launch([["seed=0"]], initial_job_idx=0)
    assert stopped.value.code == 2  # as the CLI's own errors
    return capsys.readouterr().err


def test_slurm_launcher_without_sbatch_says_so_before_submitting(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "sbatch").exists())
    monkeypatch.setenv("PATH", path)
    err = _launch(capsys)
    assert "needs SLURM's sbatch on PATH" in err and "scripts/slurm-local start" in err


def test_slurm_launcher_refuses_a_non_integer_device_count(capsys: pytest.CaptureFixture[str]) -> None:
    from omegaconf import OmegaConf

    from hydra_plugins.transferlab_slurm.launcher import device_count
    from transferlab.errors import ConfigError

    for devices in ("-1", [0, 1], True, 0):
        with pytest.raises(ConfigError, match="must be an integer ≥ 1"):
            device_count(OmegaConf.create({"devices": devices}))
    assert device_count(OmegaConf.create({"devices": "2"})) == 2
    err = _launch(capsys, "trainer.devices=auto")  # checked before sbatch is even looked for
    assert "trainer.devices='auto'" in err and "Fix: trainer.devices=1" in err


# ------------------------------------------------------------------------------------------ a real SLURM


@pytest.mark.slurm
def test_unknown_partition_is_refused_with_close_names(slurm: None, capsys: pytest.CaptureFixture[str]) -> None:
    before = set(_squeue())
    err = _launch(capsys, "hydra.launcher.partition=debg")  # sinfo of the real cluster
    assert "'debg' is not a partition of this cluster" in err and "Did you mean 'debug'" in err
    assert set(_squeue()) <= before, "something was submitted"


@pytest.mark.slurm
def test_study_slice_as_job_array_equals_local_runs(slurm: None, tmp_path: Path) -> None:
    grid = ["experiment=digits_transfer", "sweep=strategy_x_fraction", "strategy=linear_probe,scratch",
            "dataset.fraction=0.1", "seed=0", *TINY, "trainer.max_epochs=2"]
    for where in ("slurm", "local"):
        (tmp_path / where).mkdir()
    on_cluster = subprocess.Popen([sys.executable, "-m", "transferlab.train", "-m", *SMALL, *grid],
                                  env=_env(tmp_path / "slurm"), cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
    _train_cli(tmp_path / "local", "-m", *grid)  # meanwhile
    try:
        out = on_cluster.communicate(timeout=600)[0]
    finally:
        if on_cluster.poll() is None:
            on_cluster.kill()
            _cancel_jobs(tmp_path / "slurm" / "runs" / "digits_transfer" / "strategy_x_fraction")
    assert on_cluster.returncode == 0, out[-3000:]
    folder = Path("runs/digits_transfer/strategy_x_fraction")
    on_slurm, local = _results(tmp_path / "slurm" / folder), _results(tmp_path / "local" / folder)
    assert len(on_slurm) == 2 and on_slurm.keys() == local.keys()
    for name, record in on_slurm.items():
        assert record["status"] == "completed" and record["metrics"] == local[name]["metrics"], name
    submitit = tmp_path / "slurm" / folder / ".submitit"
    (script,) = submitit.glob("*/*_submission.sh")
    text = script.read_text()
    assert "#SBATCH --array=0-1%2" in text  # one array job, a task per run
    assert "--gpus-per-node" not in text and "#SBATCH --cpus-per-task=1" in text  # CPU trainer: no GPU request
    assert sorted(p.name.split("_")[1] for p in submitit.glob("*/*_result.pkl")) == ["0", "1"]


#: a fine-tune long enough to interrupt twice (about 14 s of training on one core), an epoch end on disk each epoch
REQUEUED = ["strategy=finetune", "dataset.fraction=0.5", "dataset.batch_size=32", *TINY, "trainer.max_epochs=20",
            "min_train_steps=0", "max_validations=4", "checkpoint_every_s=0", "logger=none"]


def _wait_for_epoch(last: Path, epoch: int, proc: subprocess.Popen[str]) -> int:
    """Wait until ``last.ckpt`` holds at least ``epoch``; the epoch it holds."""
    deadline = time.monotonic() + 180
    while True:
        done = load_checkpoint_safely(last)["epoch"] if last.exists() else -1
        if done >= epoch:
            return done
        assert time.monotonic() < deadline and proc.poll() is None, f"the job never got to epoch {epoch}"
        time.sleep(0.1)


@pytest.mark.slurm
def test_requeued_and_preempted_job_resumes_and_equals_the_uninterrupted_run(slurm: None, tmp_path: Path) -> None:
    """``scontrol requeue`` (SIGTERM) mid-run, then a preemption by a job of the higher-priority partition
    (USR2, requeued by SLURM and submitit): it resumes twice and ends with the uninterrupted run's numbers."""
    for where in ("slurm", "local"):
        (tmp_path / where).mkdir()
    reference = subprocess.Popen([sys.executable, "-m", "transferlab.train", "-m", *REQUEUED], env=_env(tmp_path / "local"),
                                 cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.Popen([sys.executable, "-m", "transferlab.train", "-m", *SMALL, *REQUEUED],
                            env=_env(tmp_path / "slurm"), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        run_dir = _only_run_dir(tmp_path / "slurm" / "runs" / "default" / "multirun")
        last = run_dir / "checkpoints" / "last.ckpt"
        requeued_at = _wait_for_epoch(last, 2, proc)
        (job,) = [line.split()[0] for line in _squeue() if line.strip()]
        subprocess.run(["scontrol", "requeue", job], check=True)  # SIGTERM now, then the job runs again
        statuses = _watch(run_dir, proc, 60, lambda seen: bool(seen))
        _wait_for_epoch(last, requeued_at + 2, proc)  # resumed, and two more epochs trained
        subprocess.run(["sbatch", "-p", "urgent", "-c", "2", "--mem=1G", "--output=/dev/null", "--wrap", "sleep 1"],
                       check=True, capture_output=True, cwd=tmp_path)  # needs the whole node: preempts the job
        _watch(run_dir, proc, 300, lambda seen: "completed" in seen, statuses)
        out = proc.communicate(timeout=120)[0]
        reference_out = reference.communicate(timeout=300)[0]
    finally:
        for p in (proc, reference):
            if p.poll() is None:
                p.kill()
        _cancel_jobs(tmp_path / "slurm" / "runs" / "default" / "multirun")
    assert proc.returncode == 0 and reference.returncode == 0, (out[-3000:], reference_out[-2000:])
    # never "failed"; "running" (the record a run writes when it starts) before and between the others
    assert [s for s in statuses if s != "running"] == ["interrupted", "completed"], statuses
    logs = "".join(p.read_text() for p in (run_dir.parent / ".submitit").glob("*/*_log.*"))
    assert "this job is preempted" in logs and logs.count("resuming from") == 2
    (resumed,) = _results(run_dir.parent).values()
    (uninterrupted,) = _results(tmp_path / "local" / "runs" / "default" / "multirun").values()
    assert resumed["resumed_from_epoch"] > requeued_at and resumed["metrics"] == uninterrupted["metrics"]


@pytest.mark.slurm
def test_time_limit_requeues_and_completes_under_one_wandb_id(slurm: None, tmp_path: Path) -> None:
    """``--time=1`` and about 2 minutes of training (one idle core): submitit's USR2 requeues it until it is done.

    slurmctld checks time limits every 30 s and sends the signal once the time left is under
    ``signal_delay_s`` + 30 s: with 5 s it comes 25-55 s into each 60 s segment, before the limit's SIGTERM.
    The training must outlast a segment on any CPU: 60 epochs took 31 s on 2 cores here and finished inside
    the first segment on CI's faster CPU (the test then saw no requeue), so 150 epochs: about 110 s on CI's CPU (scaled from its 60),
    and the whole test took 257 s here with 200 (CI's time budget)."""
    args = [*SMALL, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=5", "hydra.launcher.max_num_timeout=20",
            "strategy=scratch", "dataset.fraction=1.0", *TINY, "trainer.max_epochs=150", "max_validations=5",
            "logger=wandb"]
    proc = subprocess.Popen([sys.executable, "-m", "transferlab.train", "-m", *args], env=_env(tmp_path), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        run_dir = _only_run_dir(tmp_path / "runs" / "default" / "multirun")
        statuses = _watch(run_dir, proc, 720, lambda seen: "completed" in seen)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            _cancel_jobs(tmp_path / "runs" / "default" / "multirun")
    assert proc.returncode == 0, out[-3000:]
    assert statuses[-1] == "completed" and "interrupted" in statuses and "failed" not in statuses, statuses
    (record,) = _results(run_dir.parent).values()
    assert record["epochs"] == 150 and record["resumed_from_epoch"] > 0
    logs = "".join(p.read_text() for p in (run_dir.parent / ".submitit").glob("*/*_log.*"))
    assert logs.count("this job is timed-out") >= 1 and "Requeued job" in logs
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) >= 2, offline  # one offline folder per job segment …
    assert {p.name.rsplit("-", 1)[1] for p in offline} == {record["wandb"]["id"]}  # … all of one W&B run
