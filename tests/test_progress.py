"""The line a multirun prints per job: the metric, or why it failed, through Hydra's public JobReturn API."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from transferlab.progress import TOTAL_ENV, JobProgress


@pytest.mark.parametrize("status, value, shown", [
    (JobStatus.COMPLETED, 0.91234, "val/acc_best=0.9123"),
    (JobStatus.COMPLETED, float("nan"), "failed (its error is printed above)"),
    (JobStatus.FAILED, ValueError("boom"), "failed: ValueError: boom"),
])
def test_each_job_prints_its_metric_or_why_it_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], status: JobStatus, value: object,
                                                    shown: str) -> None:
    monkeypatch.setenv(TOTAL_ENV, "3")
    config = OmegaConf.create({"optimized_metric": "val/acc_best",
                               "hydra": {"job": {"num": 1}, "runtime": {"output_dir": str(tmp_path / "seed=0,strategy=scratch")}}})
    progress = JobProgress()
    progress.on_job_start(config)
    progress.on_job_end(config, JobReturn(status=status, _return_value=value))
    assert f"job 2 of 3 done" in (out := capsys.readouterr().out) and out.strip().endswith(f"seed=0,strategy=scratch {shown}")
