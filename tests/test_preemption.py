"""Signals on this machine, no SLURM needed: the launcher's requeue signal (USR2, as submitit's) and SIGTERM
stop a run between two batches, ``last.ckpt`` holds the last finished epoch, the record says ``interrupted``,
the deferred handler runs, and the relaunched run ends with the uninterrupted run's numbers.

A stand-in for submitit's job runner installs the USR2 handler (writes a marker, then ``sys.exit(-1)`` as
submitit does after ``scontrol requeue``); training pauses at a known batch until the test has signalled.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_reliability import (RESUMABLE, _assert_same_weights, _cli_args, _env, _result, _weights, start_paused,  # noqa: F401
                              uninterrupted)
from transferlab.run.checkpoints import load_checkpoint_safely

#: as submitit's job runner: a USR2 handler that "requeues" (a marker) and exits -1; training waits at
#: TL_TEST_PAUSE_AT (epoch:batch) the first time until the file TL_TEST_GO exists
FAKE_SUBMITIT_JOB = """
import os, signal, sys, time
from pathlib import Path
def requeue(signum, frame):
    Path(os.environ["TL_TEST_HANDED_OVER"]).write_text(str(signum))
    sys.exit(-1)
signal.signal(signal.SIGUSR2, requeue)
from transferlab.model import module as model
marker, go = Path(os.environ["TL_TEST_PAUSE_MARKER"]), Path(os.environ["TL_TEST_GO"])
at = tuple(int(v) for v in os.environ["TL_TEST_PAUSE_AT"].split(":"))
step = model.TransferModule.training_step
def pausing_step(self, batch, batch_idx):
    if (self.current_epoch, batch_idx) == at and not marker.exists():
        marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return step(self, batch, batch_idx)
model.TransferModule.training_step = pausing_step
from transferlab.train import main
main()
"""


def _interrupt(tmp_path: Path, out: Path, signum: int,
               finish_epoch_s: float = 0) -> tuple[subprocess.CompletedProcess[str], list[str], dict[str, str]]:
    """Run RESUMABLE with no epoch checkpoint on disk (checkpoint_every_s=1000) inside a "SLURM job", pause in
    epoch 2 batch 1, send ``signum``, let the batch finish; return the finished process, command and env.
    ``finish_epoch_s=0``: every epoch counts as long (stop after the batch, the last epoch end kept in memory)."""
    marker, go = tmp_path / "paused", tmp_path / "go"
    cmd = [sys.executable, "-c", FAKE_SUBMITIT_JOB, *_cli_args(tmp_path, out, *RESUMABLE, "checkpoint_every_s=1000",
                                                                f"signal_finish_epoch_s={finish_epoch_s}")]
    env = _env(tmp_path, TL_TEST_PAUSE_MARKER=str(marker), TL_TEST_GO=str(go), TL_TEST_PAUSE_AT="2:1",
               TL_TEST_HANDED_OVER=str(tmp_path / "handed_over"), SLURM_JOB_ID="4242")
    proc = start_paused(cmd, env, tmp_path, marker)
    try:
        proc.send_signal(signum)
        time.sleep(0.5)
        go.touch()
        log = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(cmd, proc.returncode, log, ""), cmd, env


def _assert_interrupted_at(out: Path, name: str, epoch: int) -> None:
    record = _result(out)
    assert record["status"] == "interrupted", record.get("error")
    assert name in record["error"] and "last.ckpt" in record["error"] and "traceback" not in record
    # no epoch end was due on disk (every 1000 s): only the stop on the signal can have written it
    assert load_checkpoint_safely(out / "checkpoints" / "last.ckpt")["epoch"] == epoch


def test_requeue_signal_stops_at_a_batch_end_saves_the_last_epoch_and_resumes_exactly(uninterrupted: Path,
                                                                                     tmp_path: Path) -> None:
    out = tmp_path / "run"
    first, cmd, env = _interrupt(tmp_path, out, signal.SIGUSR2)
    assert first.returncode == 255, first.stdout[-3000:]  # the deferred handler's sys.exit(-1)
    assert (tmp_path / "handed_over").read_text() == str(int(signal.SIGUSR2)), "submitit's handler never ran"
    assert "received SIGUSR2: stopping at the end of this batch or epoch" in first.stdout
    _assert_interrupted_at(out, "SIGUSR2", epoch=1)  # the end of epoch 1, kept in memory

    again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed, reference = _result(out), _result(uninterrupted)
    assert resumed["status"] == "completed" and resumed["resumed_from_epoch"] == 1 and "error" not in resumed
    assert resumed["metrics"] == reference["metrics"]
    _assert_same_weights(_weights(out), _weights(uninterrupted))


def test_sigterm_is_an_interruption_not_a_failure(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first, _, _ = _interrupt(tmp_path, out, signal.SIGTERM)
    assert first.returncode == 128 + signal.SIGTERM, first.stdout[-3000:]
    assert not (tmp_path / "handed_over").exists()  # SIGTERM is not the requeue signal: nothing handed over
    _assert_interrupted_at(out, "SIGTERMException", epoch=1)
    assert json.loads((out / "result.json").read_text())["config_hash"]


def test_requeue_signal_near_an_epoch_end_finishes_the_epoch(tmp_path: Path) -> None:
    """The paused epoch has a few batches left, far under signal_finish_epoch_s: it is finished and its end saved."""
    out = tmp_path / "run"
    first, _, _ = _interrupt(tmp_path, out, signal.SIGUSR2, finish_epoch_s=30)
    assert first.returncode == 255, first.stdout[-3000:]
    assert (tmp_path / "handed_over").read_text() == str(int(signal.SIGUSR2))
    _assert_interrupted_at(out, "SIGUSR2", epoch=2)  # nothing of epoch 2 is lost
