"""Reliability end to end: a killed run resumes to the uninterrupted run's numbers, reruns are identical,
2-process DDP on CPU trains every kind of freeze policy correctly, secrets never reach a file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import FAST, ROOT, crash_then_resume, make_cfg
from transferlab.data.sampler import EpochSampler
from transferlab.report.load import KILLED, scan
from transferlab.run.checkpoints import SafeCheckpointIO, load_checkpoint_safely
from transferlab.strategies.policies import Gradual
from transferlab.run.lifecycle import train

#: gradual unfreezing (schedule state), an MLP head with dropout (RNG state), AdamW + cosine (optimizer and
#: LR-schedule state): what a resume must restore.
RESUMABLE = [
    "backbone.name=test_resnet", "backbone.weights=null", "strategy=gradual", "strategy.milestones=[1,2]",
    "strategy.backbone_lr_scale=1", "optimizer.lr=0.01", "head=mlp", "dataset.fraction=0.2", "dataset.batch_size=32",
    "trainer.max_epochs=3", "keep_checkpoints=true", "checkpoint_every_s=0",
]

#: run through the CLI, pausing (sleeping) in training_step at a given epoch and batch the first time only,
#: so the test can SIGKILL it at a known point mid-epoch
PAUSING_CLI = """
import os, time
from pathlib import Path
from transferlab.model import module as model
marker = Path(os.environ["TL_TEST_PAUSE_MARKER"])
at = tuple(int(v) for v in os.environ["TL_TEST_PAUSE_AT"].split(":"))
step = model.TransferModule.training_step
def pausing_step(self, batch, batch_idx):
    if (self.current_epoch, batch_idx) == at and not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(3600)
    return step(self, batch, batch_idx)
model.TransferModule.training_step = pausing_step
from transferlab.train import main
main()
"""


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "TRANSFERLAB_RUNS": str(tmp / "runs"), "TRANSFERLAB_CACHE": str(tmp / "cache"), **extra,
    }


def _cli_args(tmp: Path, out: Path, *overrides: str) -> list[str]:
    """The same config make_cfg composes, as command-line overrides."""
    return [*FAST, f"paths.runs_dir={tmp / 'runs'}", f"paths.cache_dir={tmp / 'cache'}", *overrides, f"hydra.run.dir={out}"]


def _result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_safely(out / "checkpoints" / "last.ckpt")["state_dict"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def start_paused(cmd: list[str], env: dict[str, str], cwd: Path, marker: Path) -> subprocess.Popen[str]:
    """Start ``cmd`` (output piped) and wait until it pauses, i.e. writes ``marker``; killed if it never does."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 400
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not marker.exists():
        proc.kill()
        raise AssertionError(f"the run never reached its pause: {proc.poll()=} {proc.communicate()[0][-2000:]}")
    return proc


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: RESUMABLE trained in one go (in this process)."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    train(make_cfg(tmp, *RESUMABLE), tmp / "run")
    return tmp / "run"


# ---- determinism -----------------------------------------------------------------------------------
def test_rerun_of_the_same_config_gives_identical_numbers_and_report(uninterrupted: Path, tmp_path: Path) -> None:
    from transferlab.report.load import load_results
    from transferlab.report.summary import summarize

    train(make_cfg(tmp_path, *RESUMABLE), tmp_path / "run")
    first, second = _result(uninterrupted), _result(tmp_path / "run")
    assert first["status"] == second["status"] == "completed"
    assert first["config_hash"] == second["config_hash"]
    assert second["metrics"] == first["metrics"]  # exact, on CPU
    _assert_same_weights(_weights(uninterrupted), _weights(tmp_path / "run"))
    reports = [summarize(load_results([d])[0]).drop(columns=["train_time_s"]) for d in (uninterrupted, tmp_path / "run")]
    assert reports[0].equals(reports[1])


def test_training_order_depends_only_on_seed_and_epoch() -> None:
    data = list(range(50))
    fresh = EpochSampler(data, seed=3, epoch=2)  # what a resumed run builds
    running = EpochSampler(data, seed=3)
    orders = []
    for epoch in range(3):
        running.set_epoch(epoch)
        orders.append(list(running))
    assert list(fresh) == orders[2]
    assert orders[0] != orders[1] and sorted(orders[1]) == data
    assert list(EpochSampler(data, seed=4, epoch=1)) != orders[1], "another seed must give another order"
    # two DDP ranks: disjoint halves of the same permutation
    shards = []
    for rank in (0, 1):
        sampler = EpochSampler(data, seed=3, epoch=2)
        sampler.num_replicas, sampler.rank = 2, rank
        sampler.num_samples, sampler.total_size = 25, 50
        shards.append(list(sampler))
    assert sorted(shards[0] + shards[1]) == data


def test_checkpoint_writes_are_atomic(tmp_path: Path) -> None:
    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)

    class Unpicklable:
        def __reduce__(self) -> tuple:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "x": Unpicklable()}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(2)), "a failed write damaged the old file"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "a temporary file was left behind"


# ---- resume after SIGKILL ----------------------------------------------------------------------------
def test_killed_run_resumes_to_the_uninterrupted_result(uninterrupted: Path, tmp_path: Path) -> None:
    out, marker = tmp_path / "run", tmp_path / "paused"
    cmd = [sys.executable, "-c", PAUSING_CLI, *_cli_args(tmp_path, out, *RESUMABLE)]
    # pause in epoch 2 (after gradual unfroze blocks at epochs 1 and 2), after its first batch trained
    env = _env(tmp_path, TL_TEST_PAUSE_MARKER=str(marker), TL_TEST_PAUSE_AT="2:1")
    proc = start_paused(cmd, env, tmp_path, marker)
    proc.send_signal(signal.SIGKILL)
    log = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL
    assert _result(out)["status"] == "running"  # written when the run started
    # the report counts it pending, killed (no process holds its lock), and says how to resume it
    found = scan([out])
    assert found.problem_counts()["pending"] == 1 and found.problems()[0]["error"] == KILLED
    assert load_checkpoint_safely(out / "checkpoints" / "last.ckpt")["epoch"] == 1, "expected the end-of-epoch-1 checkpoint"
    assert not list((out / "checkpoints").glob(".*.tmp")), "a killed run left a temporary checkpoint"

    again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (log[-2000:], again.stderr[-3000:])
    resumed, reference = _result(out), _result(uninterrupted)
    assert resumed["status"] == "completed" and resumed["resumed_from_epoch"] == 1
    assert resumed["config_hash"] == reference["config_hash"]
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["trainable_params"] == reference["trainable_params"]
    _assert_same_weights(_weights(out), _weights(uninterrupted))


# ---- DDP ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "strategy",
    [  # gradual (blocks unfrozen after wrapping) and lora (modules added to the backbone) are the ones DDP can get
       # wrong; the others are slow-marked for time
        pytest.param(["strategy=linear_probe"], id="linear_probe", marks=pytest.mark.slow),
        pytest.param(["strategy=finetune", "strategy.unfreeze_top_k=2"], id="finetune", marks=pytest.mark.slow),
        pytest.param(["strategy=gradual", "strategy.milestones=[1]"], id="gradual"),
        pytest.param(["strategy=lp_ft", "strategy.lp_epochs=1", "strategy.solver=sgd"], id="lp_ft", marks=pytest.mark.slow),
        pytest.param(["strategy=scratch"], id="scratch", marks=pytest.mark.slow),
        pytest.param(["strategy=lora", "strategy.rank=4"], id="lora"),  # adapters added before DDP wraps the model
    ],
)
def test_ddp_on_two_cpu_processes(tmp_path: Path, strategy: list[str]) -> None:
    out = tmp_path / "run"
    args = _cli_args(tmp_path, out, "trainer=ddp_cpu", "trainer.max_epochs=2", "backbone.name=test_resnet",
                     "backbone.weights=null", "dataset.fraction=0.1", "dataset.batch_size=16", "logger=csv", *strategy)
    proc = subprocess.run([sys.executable, "-m", "transferlab.train", *args], env=_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("transferlab: done:") == 1, "only rank 0 reports"
    record = _result(out)
    assert record["status"] == "completed" and record["world_size"] == 2
    # every parameter is bit-identical on both ranks after training (checked in the run, across processes)
    assert record["ranks_in_sync"] is True
    assert record["ddp_mask_mode"] is (strategy[0] in ("strategy=gradual", "strategy=lp_ft"))
    if strategy[0] != "strategy=scratch":  # counts come from the policy (mask mode: requires_grad is True everywhere)
        assert 0 < record["trainable_params_start"] < record["total_params"]
    assert (out / "train_ddp_process_1.log").exists(), "rank 1 should run in the same Hydra output folder"
    assert len(list(tmp_path.rglob("result.json"))) == 1
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_ddp_nan_loss_stops_every_rank_with_a_failed_record(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = _cli_args(tmp_path, out, "trainer=ddp_cpu", "backbone.name=test_resnet", "backbone.weights=null",
                     "strategy=scratch", "optimizer=sgd", "optimizer.lr=1e6", "dataset.fraction=0.2", "dataset.batch_size=16")
    proc = subprocess.run([sys.executable, "-m", "transferlab.train", *args], env=_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "transferlab: error: training loss is" in proc.stderr and "Traceback" not in proc.stderr
    record = _result(out)
    assert record["status"] == "failed" and record["error"].startswith("TrainingDiverged: training loss")


def test_mask_mode_keeps_frozen_parameters_out_of_the_optimizer() -> None:
    """Under DDP a changing schedule keeps requires_grad=True everywhere; frozen grads are dropped before the step."""
    module = nn.Module()
    module.backbone = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 2))
    module.head = nn.Linear(2, 2)
    module.blocks = [["backbone.0.weight", "backbone.0.bias", "backbone.1.weight", "backbone.1.bias"],
                     ["backbone.2.weight", "backbone.2.bias"]]
    module.train()
    policy = Gradual(milestones=[1])
    policy.mask_mode = True
    policy.apply(module, epoch=1)  # the top block and the head train
    assert all(p.requires_grad for p in module.parameters())
    assert not module.backbone[1].training and module.backbone[2].training
    assert policy.parameter_counts(module) == (6 + 6, 6 + 4 + 6 + 6)
    module.head(module.backbone(torch.randn(4, 2))).sum().backward()
    policy.on_before_optimizer_step(None, module, None)  # type: ignore[arg-type]
    assert module.backbone[0].weight.grad is None and module.backbone[1].weight.grad is None
    assert module.backbone[2].weight.grad is not None and module.head.weight.grad is not None


# ---- secrets ------------------------------------------------------------------------------------------
def test_secrets_never_reach_a_file_the_run_writes(tmp_path: Path) -> None:
    secret = "secret-ABCDEFGH123"
    out = tmp_path / "run"
    args = _cli_args(tmp_path, out, "backbone.name=test_resnet", "backbone.weights=null", "strategy=linear_probe",
                     "dataset.fraction=0.1", "logger=wandb", f"+extra.note=made-with-{secret}",  # groups are closed: annotations go on top
                     "+extra.api_key=${oc.env:WANDB_API_KEY}", "+extra.hf_token=hf-not-in-env-but-named-token")
    proc = subprocess.run([sys.executable, "-m", "transferlab.train", *args],
                          env=_env(tmp_path, WANDB_API_KEY=secret), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _result(out)["wandb"]["mode"] == "offline"
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.match("*.wandb") for p in files) and (out / ".hydra" / "overrides.yaml").is_file()
    leaks = [str(p.relative_to(tmp_path)) for p in files
             if secret.encode() in p.read_bytes() or b"hf-not-in-env-but-named-token" in p.read_bytes()]
    assert not leaks, f"the secret was written to {leaks}"
    assert not [p for p in tmp_path.rglob("*") if secret in p.name]
    assert secret not in proc.stdout + proc.stderr


def test_crashed_run_with_loader_workers_resumes_in_the_same_data_order(tmp_path: Path) -> None:
    """With worker processes the first iterator of a resumed run is made before Lightning's set_epoch."""
    cfg = make_cfg(tmp_path, "backbone.name=test_resnet", "backbone.weights=null", "strategy=scratch", "dataset.fraction=0.05",
                   "dataset.batch_size=16", "dataset.num_workers=1", "trainer.max_epochs=2", "+trainer.limit_val_batches=0")

    def crashed_in_epoch_1(last: Path) -> None:
        assert load_checkpoint_safely(last)["epoch"] == 0

    uninterrupted, resumed = crash_then_resume(tmp_path, cfg, crash_epoch=1, after_crash=crashed_in_epoch_1)
    _assert_same_weights(resumed, uninterrupted)
