"""The ``transferlab-train`` command: a Hydra app over ``conf/`` (``config.location``) around ``train(cfg) -> metrics``."""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from transferlab.command_line import config_groups, error, one_line_warnings, os_error_message, unparsable_override
from transferlab.config.location import config_dir
from transferlab.errors import TransferlabError, debugging
from transferlab.failures import note_failure
from transferlab.files import atomic_write
from transferlab.naming import RESOLVER  # noqa: F401 - registered on import: it names the run folders
from transferlab.record import RESULT_FILE
from transferlab.redaction import redact_text
from transferlab.run.context import is_multirun, output_dir, rank
from transferlab.run.lifecycle import train

log = logging.getLogger("transferlab")


def redact_hydra_files() -> None:
    """Hydra saved the config and the command-line overrides in ``.hydra/`` (and a multirun's in
    ``multirun.yaml``): mask secrets in them."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    paths = []
    if hydra_cfg.output_subdir:
        paths += sorted((Path(hydra_cfg.runtime.output_dir) / str(hydra_cfg.output_subdir)).glob("*.yaml"))
    if is_multirun():
        paths.append(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
    for path in paths:
        try:
            text = path.read_text()
            clean = redact_text(text)
            if clean != text:  # through a temporary file: parallel jobs may rewrite multirun.yaml at once
                atomic_write(path, lambda f: f.write(clean.encode()), mode=0o644)
        except OSError as err:
            log.warning("could not check %s for secrets: %s", path, err)


# `${tl.config_groups:}` in conf/hydra/help/transferlab.yaml: the groups --help lists
OmegaConf.register_new_resolver("tl.config_groups", lambda: config_groups(config_dir()), replace=True)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    """Run ``train(cfg)``; return the optimised metric (for sweepers)."""
    if rank() == 0:
        redact_hydra_files()
    try:
        metrics = train(cfg)
    except SIGTERMException:  # recorded as interrupted; exit as a process killed by SIGTERM (Lightning exits 0)
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as err:  # noqa: BLE001 - in a multirun any job's error is listed at its end, not raised
        expected = isinstance(err, (TransferlabError, OSError))  # bad input, or a folder that cannot be written
        if debugging() or (not expected and not is_multirun()):
            raise
        if not expected:
            traceback.print_exc()  # an unexpected error (a bug): its traceback, then the sweep goes on
        where = f"[rank {rank()}] " if rank() else ""
        if isinstance(err, TransferlabError):
            message = str(err)
        elif isinstance(err, OSError):
            message = os_error_message(err)
        else:
            message = f"{type(err).__name__}: {err}"
        error(where + message)
        if is_multirun():
            if rank() == 0:
                note_failure(message)  # the multirun lists its failed jobs when all have run, then exits 1
            return float("nan")  # this job failed (its result.json says so); the sweep goes on
        raise SystemExit(2) from None
    summary = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("test/"))
    if rank() == 0:
        print(f"transferlab: done: {summary}")
        print(f"transferlab: result: {output_dir(cfg).resolve() / RESULT_FILE}")
    value = metrics.get(cfg.optimized_metric)
    return None if value is None else float(value)


def main() -> None:
    """Console entry point ``transferlab-train``."""
    if not Path(config_dir()).is_dir():
        print(
            f"transferlab: error: config folder {config_dir()} not found. Fix: reinstall transferlab (its wheel "
            "carries the configs), or set TRANSFERLAB_CONFIG_DIR=/path/to/conf.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    one_line_warnings()
    problem = unparsable_override(sys.argv[1:])
    if problem:
        error(problem)
        raise SystemExit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
