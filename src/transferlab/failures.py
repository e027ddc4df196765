"""A multirun's failed jobs: listed once every job has run, and the multirun exits 1.

Hydra's sweepers stop at the first job whose ``JobReturn`` holds an exception (``BasicSweeper`` reads
``return_value``, which re-raises it), so the app catches a job's error itself and returns NaN
(``transferlab.train``): the sweep goes on. What the multirun's end then needs, which jobs failed, is in
the jobs' processes (joblib runs them in worker processes, submitit and SLURM in other processes or on
other machines), and Hydra's ``on_multirun_end`` gets no job returns. So a failing job notes itself in a
file, ``<sweep dir>/.failed_jobs/<multirun id>/``, on the file system every launcher shares with the
command, and ``FailedJobs.on_multirun_end`` reads the notes of its own multirun (the id reaches the jobs
through the environment, which every launcher passes on, as ``progress.TOTAL_ENV``): several multiruns
sharing a sweep folder (Optuna workers) each list their own failures.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from transferlab.files import read_json, write_json_atomic

#: the id of the multirun a job belongs to, set when the multirun starts
MULTIRUN_ENV = "TRANSFERLAB_MULTIRUN_ID"
#: the folder, inside the sweep folder, of the failure notes (one sub-folder per multirun, removed at its end)
NOTES = ".failed_jobs"


def note_failure(error: str) -> None:
    """Note that this job of a multirun failed with ``error`` (its first line is kept)."""
    multirun = os.environ.get(MULTIRUN_ENV)
    if not multirun or not HydraConfig.initialized():
        return  # not a multirun of transferlab-train (e.g. a test calling the app without its callbacks)
    hydra = HydraConfig.get()
    num = int(hydra.job.get("num") or 0)
    lines = str(error).strip().splitlines()
    note = {"job": num, "folder": str(hydra.runtime.output_dir), "error": lines[0] if lines else "(no message)"}
    write_json_atomic(Path(hydra.sweep.dir) / NOTES / multirun / f"{num:06d}-{os.getpid()}.json", note)


def failed_jobs(sweep_dir: Path, multirun: str) -> list[dict[str, Any]]:
    """The notes of the jobs of ``multirun`` that failed, by job number."""
    notes = [read_json(p) for p in sorted((Path(sweep_dir) / NOTES / multirun).glob("*.json"))]
    return sorted((n for n in notes if isinstance(n, dict)), key=lambda n: int(n.get("job", 0)))


class FailedJobs(Callback):
    """Lists a multirun's failed jobs at its end (their folders and one-line errors) and exits 1."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[MULTIRUN_ENV] = uuid.uuid4().hex[:16]  # inherited by launcher workers

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        multirun = os.environ.pop(MULTIRUN_ENV, None)
        if not multirun:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        failed = failed_jobs(sweep_dir, multirun)
        shutil.rmtree(sweep_dir / NOTES / multirun, ignore_errors=True)
        with contextlib.suppress(OSError):  # only when empty: another multirun may share the sweep folder
            (sweep_dir / NOTES).rmdir()
        if not failed:
            return
        lines = [f"  job {n.get('job')}: {n.get('folder')}\n    {n.get('error')}" for n in failed]
        print(f"transferlab: {len(failed)} job(s) of this multirun failed (every other job ran):\n" + "\n".join(lines)
              + "\nFix what the errors say and run the same command again: completed jobs are skipped, failed ones "
              "run again.", file=sys.stderr, flush=True)
        # Hydra's callbacks catch an Exception (and only warn), not SystemExit: the process exits 1 here
        raise SystemExit(1)
