"""Bad configurations and files: each gets a clear error (what is wrong, how to fix it) or a warning that
names the fix, with no traceback, and the run leaves no partial or misleading record (no result.json, or a
valid one with status "failed"; a finished run's result.json is never overwritten).

The cases are the table in ``tests/cases.py`` (also docs/reliability.md's); each runs through the command line, in
this process (Hydra's app, stdout and stderr captured). Folder/manifest dataset files are covered in
more detail by the dataset tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from cases import BASE, CASES, FEW, PAGE, Case, RunsCode, markdown_table, table_block
from conftest import make_cfg
from transferlab.command_line import one_line_warnings
from transferlab.config.schema import BackboneConfig
from transferlab.errors import TrainingDiverged, TransferlabError, WeightsError
from transferlab.files import write_json_atomic
from transferlab.identity import config_hash
from transferlab.model.module import RunChoices, TransferModule
from transferlab.report.cli import main as report_main
from transferlab.run.checks import check_machine, cpu_cores, has_gpu
from transferlab.run.inputs import inputs_fingerprint
from transferlab.run.lifecycle import train
from transferlab.train import main as train_main


def assert_no_misleading_record(out: Path) -> dict | None:
    """No result.json, or a complete JSON file saying the run failed (never "completed")."""
    path = out / "result.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())  # a partial file would not parse
    assert record["status"] == "failed", record
    assert record["error"]
    return record


@dataclass
class Ran:
    """What a command printed and returned, and the warnings it gave."""

    code: int
    output: str  # stdout and stderr
    warned: str  # the warnings' messages, one a line


@contextlib.contextmanager
def _in_process(monkeypatch: pytest.MonkeyPatch, tmp: Path, debug: bool = False) -> Iterator[list[warnings.WarningMessage]]:
    """A command run here as from a shell in ``tmp``: its environment (``debug``: TRANSFERLAB_DEBUG=1), its
    warnings recorded, and Hydra's and logging's state put back after."""
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("TRANSFERLAB_RUNS", str(tmp / "runs"))
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp / "cache"))
    for flag in ("TRANSFERLAB_DEBUG", "HYDRA_FULL_ERROR"):
        monkeypatch.delenv(flag, raising=False)
    if debug:
        monkeypatch.setenv("TRANSFERLAB_DEBUG", "1")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        GlobalHydra.instance().clear()
        root.handlers[:], root.level = saved


def run_command(main: Callable[..., object], argv: list[str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture,
                tmp: Path, debug: bool = False) -> Ran:
    """``main`` (an entry point) with ``argv`` as its command line."""
    capfd.readouterr()
    with _in_process(monkeypatch, tmp, debug) as caught:
        monkeypatch.setattr(sys, "argv", argv)
        try:
            code = main(argv[1:]) if main is report_main else main()
        except SystemExit as exit_:
            code = exit_.code
    out = capfd.readouterr()
    return Ran(int(code or 0), out.out + out.err, "\n".join(str(w.message) for w in caught))


def transferlab_train(args: list[str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture, tmp: Path,
                      debug: bool = False) -> Ran:
    return run_command(train_main, ["transferlab-train", *args], monkeypatch, capfd, tmp, debug)


def _train_case(case: Case, tmp: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> Ran:
    extra = case.setup(tmp) if case.setup else []
    args = [*BASE, *case.args, *extra]
    if case.keeps:  # a finished run first, in the folder the bad input is aimed at
        folder = f"hydra.run.dir={tmp / 'done'}"
        assert transferlab_train([*BASE, *FEW, folder], monkeypatch, capfd, tmp).code == 0
        before = (tmp / "done" / "result.json").read_text()
        ran = transferlab_train([*BASE, *FEW, *case.args, folder], monkeypatch, capfd, tmp)
        assert (tmp / "done" / "result.json").read_text() == before, "the finished result changed"
        return ran
    return transferlab_train(args, monkeypatch, capfd, tmp)


def _report_case(case: Case, tmp: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> Ran:
    assert transferlab_train([*BASE, *FEW, f"hydra.run.dir={tmp / 'done'}"], monkeypatch, capfd, tmp).code == 0
    extra = case.setup(tmp) if case.setup else []
    return run_command(report_main, ["transferlab-report", str(tmp / "done"), *case.args, *extra], monkeypatch, capfd, tmp)


def _devices_case(case: Case, tmp: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> Ran:
    """More CPU processes than cores: the check alone (the run itself would start them all)."""
    cfg = make_cfg(tmp, *BASE, f"trainer.devices={cpu_cores() + 1}", "+trainer.strategy=ddp")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_machine(cfg, fits=True)
    return Ran(0, "", "\n".join(str(w.message) for w in caught))


#: how each kind of case runs (a new kind of case: a runner here, its name in the case's ``command``)
RUNNERS: dict[str, Callable[[Case, Path, pytest.MonkeyPatch, pytest.CaptureFixture], Ran]] = {
    "train": _train_case,
    "report": _report_case,
    "devices": _devices_case,
}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clear_message(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capfd: pytest.CaptureFixture, one_thread: None) -> None:
    if case.id == "gpu-without-gpu" and has_gpu():
        pytest.skip("this machine has a GPU")
    ran = RUNNERS[case.command](case, tmp_path, monkeypatch, capfd)
    assert "Traceback" not in ran.output, ran.output[-3000:]
    said = ran.output if case.outcome == "error" else ran.warned
    assert case.key in said and case.fix in said, f"expected {case.key!r} and {case.fix!r} in:\n{said[-3000:]}"
    if case.outcome == "error":
        assert ran.code != 0, ran.output[-2000:]
        for record in tmp_path.rglob("result.json"):
            if record.parent.name != "done":  # the finished run of a `keeps` case (checked by its runner)
                assert_no_misleading_record(record.parent)
    else:
        assert ran.code == 0, ran.output[-3000:]
        assert "transferlab: warning: " not in ran.output or case.key in ran.output
    assert not list(tmp_path.rglob("pickled-code-ran")), "loading a file executed pickled code"


def test_the_table_has_60_cases_and_the_reliability_page_shows_it() -> None:
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert {c.outcome for c in CASES} == {"error", "warning"}
    assert table_block(PAGE.read_text()) == markdown_table(), "docs/reliability.md table outdated: run python tests/cases.py"


def test_the_quoted_unicode_path_the_message_suggests_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capfd: pytest.CaptureFixture, one_thread: None) -> None:
    unquoted = next(c for c in CASES if c.id == "unicode-unquoted")
    assert unquoted.setup is not None
    root = unquoted.setup(tmp_path)[0].split("=", 1)[1]
    ran = transferlab_train([*BASE, *FEW, "dataset=folder", f'dataset.root="{root}"'], monkeypatch, capfd, tmp_path)
    assert ran.code == 0 and "transferlab: done:" in ran.output, ran.output[-3000:]


def test_a_debug_flag_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    quiet = transferlab_train([*BASE, "optimizer.lr=abc"], monkeypatch, capfd, tmp_path)
    assert quiet.code == 2 and "Traceback" not in quiet.output
    ran = transferlab_train([*BASE, "optimizer.lr=abc"], monkeypatch, capfd, tmp_path, debug=True)
    assert ran.code != 0 and "Traceback" in ran.output and "optimizer.lr='abc' is not a number" in ran.output


def test_help_describes_the_command_its_groups_and_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capfd: pytest.CaptureFixture) -> None:
    ran = transferlab_train(["--help"], monkeypatch, capfd, tmp_path)
    assert ran.code == 0 and ran.output.startswith("transferlab-train: train and evaluate one transfer-learning run")
    groups = ran.output.split("== Config groups")[1].split("== Examples ==")[0]
    for group in ("backbone", "budget", "dataset", "experiment", "head", "logger", "optimizer", "strategy", "sweep", "trainer"):
        assert f"\n  {group}: " in groups, group
    assert "sweep/wandb" not in ran.output and "lr_search" not in groups  # W&B's sweep files are no Hydra group
    examples = ran.output.split("== Examples ==")[1].split("==")[0]
    assert examples.count("transferlab-train ") == 3


def test_the_package_warnings_print_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # put back after
    one_line_warnings()
    ours = warnings.formatwarning("gradual: fix it", UserWarning, "/x/src/transferlab/run/checks.py", 3, "warnings.warn(…)")
    theirs = warnings.formatwarning("deprecated", UserWarning, "/x/site-packages/lightning/a.py", 3, "warnings.warn(…)")
    assert ours == "transferlab: warning: gradual: fix it\n"
    assert theirs.startswith("/x/site-packages/lightning/a.py:3:") and "transferlab: warning" not in theirs


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (the case table has a folder that "
                                              "cannot be created, for root too)")
def test_read_only_folders_get_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        ran = transferlab_train([*BASE, f"paths.runs_dir={read_only / 'runs'}"], monkeypatch, capfd, tmp_path)
        assert ran.code == 2 and "cannot write the output folder" in ran.output and "Traceback" not in ran.output
        assert transferlab_train([*BASE, *FEW, f"hydra.run.dir={tmp_path / 'done'}"], monkeypatch, capfd, tmp_path).code == 0
        report = run_command(report_main, ["transferlab-report", str(tmp_path / "done"), "--out", str(read_only / "report")],
                             monkeypatch, capfd, tmp_path)
        assert report.code == 2 and "cannot write the report into" in report.output and "Traceback" not in report.output
    finally:
        read_only.chmod(0o755)


# ---- resume checkpoints in the run folder --------------------------------------------------------
def _module(backbone: str = "test_resnet", num_classes: int = 10) -> TransferModule:
    return TransferModule(BackboneConfig(name=backbone), RunChoices(num_classes=num_classes, input_size=32))


def _ckpt_of(module: TransferModule) -> dict:
    return {"epoch": 0, "global_step": 3, "state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}


def _ckpt_other_backbone(path: Path, marker: Path) -> None:
    torch.save(_ckpt_of(_module("test_vit")), path)


def _ckpt_other_class_count(path: Path, marker: Path) -> None:
    torch.save(_ckpt_of(_module(num_classes=5)), path)


def _ckpt_with_code(path: Path, marker: Path) -> None:
    torch.save({**_ckpt_of(_module()), "loops": RunsCode(marker)}, path)


def _ckpt_truncated(path: Path, marker: Path) -> None:
    torch.save(_ckpt_of(_module()), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (_ckpt_other_backbone, r"last.ckpt \(written for backbone 'test_vit', 10 classes\) does not fit this run's model: \d+ missing keys \['backbone.conv1"),
        (_ckpt_other_class_count, r"\(written for backbone 'test_resnet', 5 classes\) does not fit this run's model: 2 shape mismatches \['head.0.weight: checkpoint \(5, 96\) vs model \(10, 96\)'"),
        (_ckpt_with_code, r"cannot load checkpoint .*last.ckpt safely: it holds pickled Python objects, which are never loaded as they could run code \(.*Unsupported global: GLOBAL (builtins|io)\.open\)"),
        (_ckpt_truncated, r"cannot load checkpoint .*last.ckpt safely: it is damaged.*Fix: delete .*last.ckpt \(the run then starts over\)"),
    ],
)
def test_bad_resume_checkpoint_gets_a_clear_error(tmp_path: Path, make: Callable, pattern: str) -> None:
    """A ``last.ckpt`` in the run folder of this very config (run_state.json matches) that must not be resumed."""
    cfg = make_cfg(tmp_path, *BASE, "strategy=scratch", "dataset.fraction=0.1")
    out, marker = tmp_path / "run", tmp_path / "pickled-code-ran"
    (out / "checkpoints").mkdir(parents=True)
    write_json_atomic(out / "run_state.json", {"config_hash": config_hash(cfg, inputs_fingerprint(cfg)["digest"])})
    make(out / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(WeightsError, match=pattern):
        train(cfg, out)
    assert not marker.exists(), "loading the checkpoint executed pickled code"
    assert_no_misleading_record(out)


# ---- training that diverges -------------------------------------------------------------------------
def test_nan_loss_stops_the_run_with_a_failed_record(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, *BASE, "strategy=scratch", "optimizer=sgd", "optimizer.lr=1e6", "dataset.fraction=0.2",
                   "dataset.batch_size=16")
    with pytest.raises(TrainingDiverged, match=r"training loss is (nan|inf|-inf) at epoch 0, step \d+\. Fix: lower optimizer.lr"):
        train(cfg, tmp_path / "run")
    record = assert_no_misleading_record(tmp_path / "run")
    assert record is not None and record["error"].startswith("TrainingDiverged: training loss is")
    assert isinstance(record, dict) and "metrics" not in record
    assert issubclass(TrainingDiverged, TransferlabError)  # the CLI prints it without a traceback, exit code 2
