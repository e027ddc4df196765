"""What ``transferlab-train`` checks and prints around Hydra, so that bad input gets one line, not a traceback:

- an override Hydra's parser rejects (a unicode path, a space): said before Hydra runs, with the quoting;
- an output folder that cannot be written: a Hydra callback (``OutputFolderCheck``) tries it before Hydra
  writes its ``.hydra/`` files there;
- an ``OSError`` inside a run (a folder that cannot be written, a full disk): the path and the fix;
- the package's warnings: one line each, ``transferlab: warning: …``;
- ``--help``: the config groups a user selects (``config_groups``: the top-level folders of ``conf/`` and the
  study groups beside it, ``experiment`` and ``sweep``; see ``config.location``).

``TRANSFERLAB_DEBUG=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from transferlab.config.location import STUDY_GROUPS, study_folder
from transferlab.errors import debugging

def error(message: str) -> None:
    """Print ``transferlab: error: MESSAGE`` on stderr."""
    print(f"transferlab: error: {message}", file=sys.stderr, flush=True)


def one_line_warnings() -> None:
    """Show the package's own warnings as ``transferlab: warning: …`` (Python's format adds the file, line and
    source line, which read like a traceback); other libraries' warnings keep Python's format."""
    python_format = warnings.formatwarning

    def format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
        if f"{os.sep}transferlab{os.sep}" in filename:
            return f"transferlab: warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning  # type: ignore[assignment]


def unparsable_override(args: Sequence[str]) -> str | None:
    """The message for the first command-line override Hydra's grammar rejects, or None.

    Overrides are the arguments with ``=`` that are not flags; Hydra's own parser decides.
    """
    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            parser.parse_overrides([arg])
        except OverrideParseException:
            key, value = arg.split("=", 1)
            quoted = value.replace('"', '\\"')
            return (f"cannot read the override {arg!r}: Hydra's override grammar takes letters, digits and _-./:@ "
                    f"unquoted, and this value has other characters (unicode, spaces, brackets…). Fix: quote the value, "
                    f"and the whole argument for the shell: '{key}=\"{quoted}\"'")
    return None


def _write_problem(folder: Path) -> OSError | None:
    """Why ``folder`` cannot be created and written (an OSError), or None when it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return err
    return None


class OutputFolderCheck(Callback):
    """Creates the run's (or the sweep's) output folder and writes into it before Hydra does; when it
    cannot, says so in one line and exits 2 (Hydra's own attempt ended in chained tracebacks)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # as run_job does next: the folder name reads ${hydra:job.…}
        self._check(Path(str(config.hydra.run.dir)), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")

    @staticmethod
    def _check(folder: Path, key: str) -> None:
        problem = _write_problem(folder)
        if problem is None or debugging():
            return
        error(f"cannot write the output folder {folder} ({problem.strerror or problem}). Fix: point paths.runs_dir "
              f"(or TRANSFERLAB_RUNS) at a folder you can write, e.g. paths.runs_dir=/tmp/runs, or set {key}.")
        raise SystemExit(2)  # not an Exception: Hydra's callback runner passes it on


def os_error_message(err: OSError) -> str:
    """A one-line message for an ``OSError`` inside a run: what failed on which path, and the fix."""
    where = f" {err.filename}" if err.filename else ""
    return (f"cannot access{where}: {err.strerror or err}. Fix: make sure that folder exists and can be written "
            "(paths.runs_dir / TRANSFERLAB_RUNS for runs, paths.cache_dir / TRANSFERLAB_CACHE for caches) "
            "and that the disk has space.")


def config_groups(conf: Path) -> str:
    """The config groups a user selects, one line each (``group: option, …``): the top-level folders of
    ``conf/`` (but Hydra's own) and the study groups beside it, each with its YAML files."""
    folders = {p.name: p for p in conf.iterdir() if p.is_dir() and p.name != "hydra"}
    folders.update({group: study_folder(group, conf) for group in STUDY_GROUPS})
    lines = []
    for name, folder in sorted(folders.items()):
        options = sorted(f.stem for f in folder.glob("*.yaml"))
        if options:
            lines.append(f"  {name}: {', '.join(options)}")
    return "\n".join(lines)
